/* admin_breaker.h — the "breaker" command of aiq-admin: show the shared circuit breakers,
 * or force one open or closed (or back to automatic) for every worker. */
#ifndef AIQ_ADMIN_BREAKER_H
#define AIQ_ADMIN_BREAKER_H

#include <stdbool.h>
#include <stdio.h>

/* argv holds what follows "breaker" (argc words), borrowed. json: "show" prints one JSON
 * document. Returns the exit code: 0 done, 1 failed (or show MODEL found no such
 * breaker), 2 usage error. */
/* state_base: the workers' breaker state base dir on this host (breaker.path, or
 * <cache.path>/breakers), whose scope of prefix breaker show also reads; NULL: the topic
 * only. Borrowed. */
int aiq_admin_breaker(const char *brokers, const char *prefix, const char *state_base, bool json,
                      int argc, char **argv);

/* The help text of "aiq-admin breaker". */
void aiq_admin_breaker_usage(FILE *out);

#endif
