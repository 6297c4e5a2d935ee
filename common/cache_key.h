/* cache_key.h — the cache key of a job: two jobs that ask the model the same question (up to
 * key order, whitespace, number spelling, escapes; see canon.h) get the same key. */
#ifndef AIQ_CACHE_KEY_H
#define AIQ_CACHE_KEY_H

#include "aiq_err.h"
#include "canon.h" /* AIQ_CANON_DROP_MAX bounds the volatile fields */
#include "job.h"

#include <stddef.h>
#include <stdint.h>

#define AIQ_CACHE_KEY_LEN 32 /* SHA-256 */

/* The cache key of a job: SHA-256 over a version tag and the length-prefixed components
 * operation, model, persona (absent = ""), api, system (absent = ""), and the canonical
 * texts of payload, messages, body and inference (absent = "" for each; an absent or
 * empty inference object are the same). drop is applied to payload and to body (paths are
 * relative to those objects), never to messages. model is the model id the worker will
 * actually call; NULL means job->model, or "" when the job names none. Nothing else of the
 * job (id, priority, deadlines, cache options, tenant, tracing) is part of the key. Borrows
 * everything. Returns 0, or the errors of aiq_canon_json, or AIQ_ECRYPTO. Any thread. */
int aiq_cache_key_job(const aiq_job_t *job, const char *model, const char *const *drop,
                      size_t ndrop, uint8_t key[AIQ_CACHE_KEY_LEN], aiq_err_t *err);

/* Lower-case hex of a key into out (64 chars + NUL). */
void aiq_cache_key_hex(const uint8_t key[AIQ_CACHE_KEY_LEN], char out[65]);

/* Parses exactly 64 hex digits (either case) into key. Returns 0 or AIQ_EINVAL. */
int aiq_cache_key_parse(const char *hex, uint8_t key[AIQ_CACHE_KEY_LEN]);

#endif
