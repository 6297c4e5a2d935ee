package dev.aiq.peer;

import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.Vertx;
import io.vertx.core.buffer.Buffer;
import io.vertx.ext.web.client.HttpRequest;
import io.vertx.ext.web.client.HttpResponse;
import io.vertx.ext.web.client.WebClient;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ThreadLocalRandom;
import software.amazon.awssdk.http.ContentStreamProvider;
import software.amazon.awssdk.http.SdkHttpMethod;
import software.amazon.awssdk.http.SdkHttpRequest;
import software.amazon.awssdk.http.auth.aws.signer.AwsV4HttpSigner;
import software.amazon.awssdk.http.auth.spi.signer.SignedRequest;
import software.amazon.awssdk.identity.spi.AwsCredentialsIdentity;
import software.amazon.awssdk.identity.spi.AwsSessionCredentialsIdentity;

/**
 * Bedrock Converse over the Vert.x WebClient: SigV4 by the AWS SDK v2 signer, retries of 429, 5xx
 * and transport errors with exponential backoff and jitter on Vert.x timers. Nothing blocks: the
 * returned future completes on a Vert.x event loop.
 */
final class ConverseClient {

    static final int MAX_RETRIES = 3;
    static final long BACKOFF_BASE_MS = 100;
    static final long ATTEMPT_TIMEOUT_MS = 60_000;

    /** What one job's model call came to, after all attempts. */
    record Outcome(int status, byte[] body, String transportError, int attempts, long providerNanos) {
        boolean ok() {
            return status >= 200 && status < 300;
        }
    }

    private final Vertx vertx;
    private final WebClient web;
    private final AwsV4HttpSigner signer = AwsV4HttpSigner.create();
    private final AwsCredentialsIdentity credentials;
    private final String endpoint;
    private final String region;

    ConverseClient(Vertx vertx, WebClient web, PeerConfig cfg) {
        this.vertx = vertx;
        this.web = web;
        this.endpoint = cfg.endpoint();
        this.region = cfg.region();
        this.credentials = cfg.sessionToken() == null
                ? AwsCredentialsIdentity.create(cfg.accessKeyId(), cfg.secretAccessKey())
                : AwsSessionCredentialsIdentity.create(cfg.accessKeyId(), cfg.secretAccessKey(), cfg.sessionToken());
    }

    /** POSTs body to /model/{model}/converse; never fails, the outcome says what happened. */
    Future<Outcome> converse(String model, byte[] body) {
        Promise<Outcome> done = Promise.promise();
        String uri = endpoint + "/model/" + encodePathSegment(model) + "/converse";
        attempt(uri, body, 1, 0L, done);
        return done.future();
    }

    private void attempt(String uri, byte[] body, int n, long nanosSoFar, Promise<Outcome> done) {
        long t0 = System.nanoTime();
        HttpRequest<Buffer> req = web.postAbs(uri).timeout(ATTEMPT_TIMEOUT_MS);
        // Signed per attempt: X-Amz-Date must be fresh for a retry after backoff.
        for (Map.Entry<String, List<String>> h : sign(uri, body).entrySet()) {
            if (!h.getKey().equalsIgnoreCase("host"))
                req.putHeader(h.getKey(), h.getValue());
        }
        req.sendBuffer(Buffer.buffer(body)).onComplete(ar -> {
            long spent = nanosSoFar + (System.nanoTime() - t0);
            HttpResponse<Buffer> resp = ar.succeeded() ? ar.result() : null;
            int status = resp == null ? 0 : resp.statusCode();
            boolean retryable = resp == null || status == 429 || status >= 500;
            if (retryable && n <= MAX_RETRIES) {
                vertx.setTimer(backoffMs(n), id -> attempt(uri, body, n + 1, spent, done));
                return;
            }
            byte[] respBody = resp == null || resp.body() == null ? new byte[0] : resp.body().getBytes();
            String transport = resp == null ? String.valueOf(ar.cause()) : null;
            done.complete(new Outcome(status, respBody, transport, n, spent));
        });
    }

    private Map<String, List<String>> sign(String uri, byte[] body) {
        SdkHttpRequest request = SdkHttpRequest.builder()
                .method(SdkHttpMethod.POST)
                .uri(URI.create(uri))
                .putHeader("Content-Type", "application/json")
                .build();
        SignedRequest signed = signer.sign(r -> r.identity(credentials)
                .request(request)
                .payload(ContentStreamProvider.fromByteArrayUnsafe(body))
                .putProperty(AwsV4HttpSigner.SERVICE_SIGNING_NAME, "bedrock")
                .putProperty(AwsV4HttpSigner.REGION_NAME, region));
        return signed.request().headers();
    }

    /** Retry n waits base * 2^(n-1), jittered to [50 %, 100 %] of that. */
    static long backoffMs(int n) {
        long cap = BACKOFF_BASE_MS << (n - 1);
        return cap / 2 + ThreadLocalRandom.current().nextLong(cap / 2 + 1);
    }

    /** RFC 3986 path-segment encoding as the AWS SDKs do for the model id (':' becomes %3A). */
    static String encodePathSegment(String s) {
        StringBuilder out = new StringBuilder(s.length() + 8);
        for (byte b : s.getBytes(StandardCharsets.UTF_8)) {
            int c = b & 0xff;
            if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
                    || c == '-' || c == '_' || c == '.' || c == '~') {
                out.append((char) c);
            } else {
                out.append('%').append(Character.toUpperCase(Character.forDigit(c >> 4, 16)))
                        .append(Character.toUpperCase(Character.forDigit(c & 0xf, 16)));
            }
        }
        return out.toString();
    }
}
