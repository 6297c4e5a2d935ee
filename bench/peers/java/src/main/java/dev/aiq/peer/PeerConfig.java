package dev.aiq.peer;

import java.util.List;
import java.util.Map;

/** The peer contract's environment (bench/peers/README.md), checked once at start. */
record PeerConfig(
        String brokers,
        String prefix,
        String group,
        String endpoint,
        int maxInflight,
        String accessKeyId,
        String secretAccessKey,
        String sessionToken,
        String region,
        String model) {

    static final int MAX_INFLIGHT_LIMIT = 100_000;

    /** Reads and validates the environment; the exception message names the variable. */
    static PeerConfig fromEnv(Map<String, String> env) {
        String endpoint = required(env, "PEER_ENDPOINT");
        while (endpoint.endsWith("/"))
            endpoint = endpoint.substring(0, endpoint.length() - 1);
        if (!endpoint.startsWith("http://") && !endpoint.startsWith("https://"))
            throw new IllegalArgumentException("PEER_ENDPOINT: '" + endpoint + "' is not an http(s) URL");
        return new PeerConfig(
                required(env, "PEER_BROKERS"),
                env.getOrDefault("PEER_PREFIX", "aiq."),
                required(env, "PEER_GROUP"),
                endpoint,
                parseInflight(required(env, "PEER_MAX_INFLIGHT")),
                required(env, "AWS_ACCESS_KEY_ID"),
                required(env, "AWS_SECRET_ACCESS_KEY"),
                blankToNull(env.get("AWS_SESSION_TOKEN")),
                env.getOrDefault("AWS_REGION", "us-east-1"),
                env.getOrDefault("PEER_MODEL", "anthropic.claude-3-haiku-20240307-v1:0"));
    }

    List<String> jobTopics() {
        return List.of("critical", "high", "normal", "low").stream().map(p -> prefix + "jobs." + p).toList();
    }

    String resultsTopic() {
        return prefix + "results";
    }

    private static String required(Map<String, String> env, String name) {
        String v = blankToNull(env.get(name));
        if (v == null)
            throw new IllegalArgumentException(name + " is not set (see bench/peers/README.md)");
        return v;
    }

    private static String blankToNull(String v) {
        return v == null || v.isBlank() ? null : v.trim();
    }

    private static int parseInflight(String v) {
        int n;
        try {
            n = Integer.parseInt(v);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("PEER_MAX_INFLIGHT: '" + v + "' is not an integer");
        }
        if (n < 1 || n > MAX_INFLIGHT_LIMIT)
            throw new IllegalArgumentException("PEER_MAX_INFLIGHT: " + n + " is outside 1.." + MAX_INFLIGHT_LIMIT);
        return n;
    }
}
