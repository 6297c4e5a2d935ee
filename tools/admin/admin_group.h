/* admin_group.h — the "group describe" command of aiq-admin: a worker group's state and
 * members, each member's assignment, and committed offset, end offset and lag per job partition. */
#ifndef AIQ_ADMIN_GROUP_H
#define AIQ_ADMIN_GROUP_H

#include <stdbool.h>
#include <stdio.h>

/* Describes consumer group `group` over the four job topics of `prefix`, as a table on
 * stdout or (json) one JSON object. Borrows every string. Returns the exit code: 0 shown,
 * 1 the group does not exist, a job topic is missing or the broker failed (cause on
 * stderr), 2 prefix makes invalid names. */
int aiq_admin_group_describe(const char *brokers, const char *prefix, const char *group, bool json);

/* "aiq-admin group --help". */
void aiq_admin_group_usage(FILE *out);

#endif
