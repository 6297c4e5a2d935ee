package dev.aiq.peer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.Producer;
import org.apache.kafka.clients.producer.ProducerRecord;

/**
 * One job, record in to result acked: decode, build the Converse request, call, publish the result
 * keyed by job id. The returned future completes only when the broker acknowledged the result, so
 * Parallel Consumer commits the record's offset only then (at-least-once). It fails only when the
 * result could not be published; PC then retries the record.
 */
final class JobHandler {

    private static final int MAX_ERROR_MESSAGE = 512;

    private final ObjectMapper json;
    private final ConverseClient converse;
    private final Producer<String, byte[]> producer;
    private final String resultsTopic;
    private final String defaultModel;

    JobHandler(ObjectMapper json, ConverseClient converse, Producer<String, byte[]> producer, PeerConfig cfg) {
        this.json = json;
        this.converse = converse;
        this.producer = producer;
        this.resultsTopic = cfg.resultsTopic();
        this.defaultModel = cfg.model();
    }

    Future<Void> handle(ConsumerRecord<String, byte[]> rec) {
        long t0 = System.nanoTime();
        JsonNode job;
        try {
            job = json.readTree(rec.value());
        } catch (IOException | RuntimeException e) {
            job = null;
        }
        String id = job != null && job.path("id").isTextual() ? job.get("id").asText() : fallbackId(rec);
        if (job == null || !job.isObject())
            return publish(id, failed(id, defaultModel, "invalid_job", "record value is not a JSON object", t0, 0));
        String model = job.path("model").isTextual() ? job.get("model").asText() : defaultModel;
        ObjectNode request = converseRequest((ObjectNode) job);
        if (request == null)
            return publish(id, failed(id, model, "invalid_job", "job has neither messages nor payload", t0, 0));
        byte[] body;
        try {
            body = json.writeValueAsBytes(request);
        } catch (IOException e) {
            return publish(id, failed(id, model, "invalid_job", e.getMessage(), t0, 0));
        }
        return converse.converse(model, body).compose(out -> publish(id, result(id, model, out, t0)));
    }

    /** messages as given, else one user message with the compact JSON of payload. */
    private ObjectNode converseRequest(ObjectNode job) {
        ObjectNode req = json.createObjectNode();
        if (job.path("messages").isArray() && !job.get("messages").isEmpty()) {
            req.set("messages", job.get("messages"));
        } else if (job.has("payload")) {
            ObjectNode msg = req.putArray("messages").addObject().put("role", "user");
            msg.putArray("content").addObject().put("text", job.get("payload").toString());
        } else {
            return null;
        }
        if (job.path("system").isTextual())
            req.putArray("system").addObject().put("text", job.get("system").asText());
        JsonNode inf = job.path("inference");
        if (inf.isObject()) {
            ObjectNode cfg = json.createObjectNode();
            copy(inf, "max_tokens", cfg, "maxTokens");
            copy(inf, "temperature", cfg, "temperature");
            copy(inf, "top_p", cfg, "topP");
            copy(inf, "stop_sequences", cfg, "stopSequences");
            if (!cfg.isEmpty())
                req.set("inferenceConfig", cfg);
        }
        return req;
    }

    private ObjectNode result(String id, String model, ConverseClient.Outcome out, long t0) {
        return decode(id, model, out, t0).put("attempts", out.attempts());
    }

    private ObjectNode decode(String id, String model, ConverseClient.Outcome out, long t0) {
        long providerMs = out.providerNanos() / 1_000_000;
        if (!out.ok()) {
            String kind = out.status() == 0 ? "transport" : "http_" + out.status();
            String msg = out.status() == 0 ? out.transportError() : errorMessage(out.body());
            return failed(id, model, kind, msg, t0, providerMs);
        }
        JsonNode resp;
        try {
            resp = json.readTree(out.body());
        } catch (IOException e) {
            return failed(id, model, "bad_response", "response is not JSON", t0, providerMs);
        }
        JsonNode text = resp.path("output").path("message").path("content").path(0).path("text");
        if (!text.isTextual())
            return failed(id, model, "bad_response", "no output.message.content[0].text", t0, providerMs);
        ObjectNode r = base(id, "succeeded", model);
        r.putObject("output").put("text", text.asText());
        JsonNode u = resp.path("usage");
        r.putObject("usage")
                .put("input_tokens", u.path("inputTokens").asLong())
                .put("output_tokens", u.path("outputTokens").asLong())
                .put("total_tokens", u.path("totalTokens").asLong());
        return finish(r, t0, providerMs);
    }

    private ObjectNode failed(String id, String model, String kind, String message, long t0, long providerMs) {
        ObjectNode r = base(id, "failed", model);
        r.putNull("output");
        r.putObject("usage").put("input_tokens", 0).put("output_tokens", 0).put("total_tokens", 0);
        String m = message == null ? "" : message;
        r.putObject("error").put("kind", kind)
                .put("message", m.length() > MAX_ERROR_MESSAGE ? m.substring(0, MAX_ERROR_MESSAGE) : m);
        return finish(r, t0, providerMs);
    }

    private ObjectNode base(String id, String status, String model) {
        ObjectNode r = json.createObjectNode();
        r.put("job_id", id).put("status", status).put("model", model);
        return r;
    }

    /** total_ms ends here, when the result is handed to the producer (the contract's definition). */
    private static ObjectNode finish(ObjectNode r, long t0, long providerMs) {
        r.put("completed_at", Instant.now().truncatedTo(ChronoUnit.MILLIS).toString());
        r.putObject("timings").put("total_ms", (System.nanoTime() - t0) / 1_000_000).put("provider_ms", providerMs);
        return r;
    }

    private Future<Void> publish(String id, ObjectNode result) {
        Promise<Void> acked = Promise.promise();
        try {
            producer.send(new ProducerRecord<>(resultsTopic, id, json.writeValueAsBytes(result)), (md, err) -> {
                if (err != null)
                    acked.fail(err);
                else
                    acked.complete();
            });
        } catch (IOException | RuntimeException e) {
            acked.fail(e);
        }
        return acked.future();
    }

    private String errorMessage(byte[] body) {
        try {
            JsonNode m = json.readTree(body).path("message");
            if (m.isTextual())
                return m.asText();
        } catch (IOException | RuntimeException e) {
            // not JSON: fall through to the raw text
        }
        return new String(body, StandardCharsets.UTF_8);
    }

    private static void copy(JsonNode from, String key, ObjectNode to, String as) {
        if (from.has(key))
            to.set(as, from.get(key));
    }

    private static String fallbackId(ConsumerRecord<String, byte[]> rec) {
        return rec.key() != null ? rec.key() : rec.topic() + "-" + rec.partition() + "-" + rec.offset();
    }
}
