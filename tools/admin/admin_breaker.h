/* admin_breaker.h — the "breaker" command of aiq-admin: list the shared circuit breakers,
 * or force one open or closed (or back to automatic) for every worker. */
#ifndef AIQ_ADMIN_BREAKER_H
#define AIQ_ADMIN_BREAKER_H

/* argv holds what follows "breaker" (argc words). Returns the process exit code. */
int aiq_admin_breaker(const char *brokers, const char *prefix, int argc, char **argv);

#endif
