/* admin_cache.h — the "cache" command of aiq-admin: stats, get, list, invalidate, purge,
 * sweep and warm-up of the host's LMDB response cache (common/cache.h). */
#ifndef AIQ_ADMIN_CACHE_H
#define AIQ_ADMIN_CACHE_H

#include <stdbool.h>

/* True when the first word of argv that is not an option (or an option's value) is
 * "cache": the command parses its own options, which aiq-admin's table does not know. */
bool aiq_admin_cache_wanted(int argc, char **argv);

/* Runs "aiq-admin [options] cache ..." on the whole argv. Returns the exit code: 0 done,
 * 1 failed (or get found nothing), 2 usage error, 3 warm finished but skipped bad input. */
int aiq_admin_cache(int argc, char **argv);

#endif
