package dev.aiq.peer;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.confluent.parallelconsumer.ParallelConsumerOptions;
import io.confluent.parallelconsumer.ParallelConsumerOptions.CommitMode;
import io.confluent.parallelconsumer.ParallelConsumerOptions.ProcessingOrder;
import io.confluent.parallelconsumer.internal.DrainingCloseable.DrainingMode;
import io.confluent.parallelconsumer.vertx.VertxParallelEoSStreamProcessor;
import io.vertx.core.Vertx;
import io.vertx.ext.web.client.WebClient;
import io.vertx.ext.web.client.WebClientOptions;
import java.time.Duration;
import java.util.Collection;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.Producer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import sun.misc.Signal;

/**
 * The aiq benchmark peer on Confluent Parallel Consumer: PC's Vert.x engine (UNORDERED,
 * maxConcurrency = PEER_MAX_INFLIGHT) hands each record to {@link JobHandler}, whose Vert.x future
 * ends when the result is acked. See bench/peers/README.md for the contract.
 */
public final class Peer {

    /** Contract: commit at least every second; PC's default is 5 s. */
    static final Duration COMMIT_INTERVAL = Duration.ofMillis(250);
    static final Duration DRAIN_TIMEOUT = Duration.ofSeconds(60);

    public static void main(String[] args) throws Exception {
        PeerConfig cfg;
        try {
            cfg = PeerConfig.fromEnv(System.getenv());
        } catch (IllegalArgumentException e) {
            System.err.println("peer: " + e.getMessage());
            System.exit(2);
            return;
        }
        CountDownLatch stop = new CountDownLatch(1);
        // Own the signals: a JVM shutdown hook would exit 143, the contract wants 0 after the drain.
        // A second signal exits at once; unfinished records are redelivered to the next consumer.
        for (String sig : new String[] {"TERM", "INT"}) {
            Signal.handle(new Signal(sig), s -> {
                if (stop.getCount() == 0)
                    Runtime.getRuntime().halt(1);
                stop.countDown();
            });
        }

        Producer<String, byte[]> producer = new KafkaProducer<>(producerProps(cfg));
        Vertx vertx = Vertx.vertx();
        WebClient web = WebClient.create(vertx, new WebClientOptions()
                .setMaxPoolSize(cfg.maxInflight()) // one keep-alive connection per job in flight
                .setKeepAlive(true)
                .setConnectTimeout(10_000)
                .setIdleTimeout(60)
                .setUserAgent("aiq-peer-pc"));

        ParallelConsumerOptions<String, byte[]> options = ParallelConsumerOptions.<String, byte[]>builder()
                .consumer(new KafkaConsumer<>(consumerProps(cfg)))
                .ordering(ProcessingOrder.UNORDERED)
                .maxConcurrency(cfg.maxInflight())
                .commitMode(CommitMode.PERIODIC_CONSUMER_ASYNCHRONOUS)
                .commitInterval(COMMIT_INTERVAL)
                .drainTimeout(DRAIN_TIMEOUT)
                .build();
        var pc = new VertxParallelEoSStreamProcessor<String, byte[]>(vertx, web, options);

        ConverseClient converse = new ConverseClient(vertx, web, cfg);
        JobHandler handler = new JobHandler(new ObjectMapper(), converse, producer, cfg);
        AtomicBoolean ready = new AtomicBoolean();
        pc.subscribe(cfg.jobTopics(), new ConsumerRebalanceListener() {
            @Override
            public void onPartitionsAssigned(Collection<TopicPartition> parts) {
                if (!parts.isEmpty() && ready.compareAndSet(false, true)) {
                    System.out.println("peer ready");
                    System.out.flush();
                }
            }

            @Override
            public void onPartitionsRevoked(Collection<TopicPartition> parts) {
                // PC commits what is done before the partitions go.
            }
        });
        // PC runs this hook after it has queued the finished record for commit, so a count of 0
        // means every started job is in PC's hands (see drain()).
        AtomicInteger inFlight = new AtomicInteger();
        AtomicInteger unacked = new AtomicInteger(); // jobs between start and result ack
        AtomicInteger peakUnacked = new AtomicInteger();
        pc.addVertxOnCompleteHook(inFlight::decrementAndGet);
        pc.vertxFuture(ctx -> {
            inFlight.incrementAndGet();
            peakUnacked.accumulateAndGet(unacked.incrementAndGet(), Math::max);
            // Registered before PC's own handlers, so it runs before PC can dispatch the next record.
            return handler.handle(ctx.getSingleConsumerRecord()).onComplete(ar -> unacked.decrementAndGet());
        });
        System.err.printf("peer: brokers=%s group=%s topics=%s endpoint=%s max_inflight=%d%n",
                cfg.brokers(), cfg.group(), cfg.jobTopics(), cfg.endpoint(), cfg.maxInflight());

        // PC closes itself on a fatal error (e.g. a failed commit); then there is nothing to drain.
        while (!stop.await(1, TimeUnit.SECONDS)) {
            if (pc.isClosedOrFailed()) {
                System.err.println("peer: parallel consumer stopped: " + pc.getFailureCause());
                producer.close(Duration.ofSeconds(10));
                System.exit(1);
            }
        }
        System.err.println("peer: draining " + inFlight.get() + " jobs in flight (peak unacked " + peakUnacked.get() + ")");
        int rc = 0;
        try {
            drain(pc, inFlight);
        } catch (RuntimeException e) {
            System.err.println("peer: drain failed: " + e);
            rc = 1;
        }
        producer.close(Duration.ofSeconds(10));
        System.err.println("peer: stopped");
        System.exit(rc);
    }

    /**
     * PC 0.5.3.3's own DRAIN close does not wait for Vert.x futures still running: it commits and
     * closes Vert.x as soon as no record awaits dispatch, so jobs in flight would be cut off and
     * redone by the next consumer. Instead: pause (no new dispatch; commits go on), wait until
     * every started job's result was acked, then close without draining, which commits what is
     * done. Records PC buffered but never started stay uncommitted for the next owner.
     */
    private static void drain(VertxParallelEoSStreamProcessor<String, byte[]> pc, AtomicInteger inFlight)
            throws InterruptedException {
        pc.pauseIfRunning();
        long deadline = System.nanoTime() + DRAIN_TIMEOUT.toNanos();
        int idleChecks = 0;
        // Twice idle 50 ms apart: a record already handed to PC's dispatch thread may still start.
        while (idleChecks < 2 && System.nanoTime() < deadline) {
            Thread.sleep(50);
            idleChecks = inFlight.get() == 0 ? idleChecks + 1 : 0;
        }
        if (inFlight.get() > 0)
            System.err.println("peer: drain timeout with " + inFlight.get() + " jobs in flight");
        pc.close(DRAIN_TIMEOUT, DrainingMode.DONT_DRAIN);
    }

    private static Properties consumerProps(PeerConfig cfg) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, cfg.brokers());
        p.put(ConsumerConfig.GROUP_ID_CONFIG, cfg.group());
        p.put(ConsumerConfig.CLIENT_ID_CONFIG, "aiq-peer-pc");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false"); // PC commits; it insists on this
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        return p;
    }

    private static Properties producerProps(PeerConfig cfg) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, cfg.brokers());
        p.put(ProducerConfig.CLIENT_ID_CONFIG, "aiq-peer-pc-results");
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        // 5 ms, as librdkafka (aiq) and kafka-clients 4.x default to; 3.9's default is 0.
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        return p;
    }
}
