/* converse.h — the Bedrock Converse surface a job may carry (content blocks, system blocks,
 * toolConfig, guardrailConfig, ...), checked against botocore's bedrock-runtime shapes, and
 * the model id rule. A job that breaks a shape is refused with the field named, so Bedrock
 * never sees a request it would answer 400. Pure functions; any thread. */
#ifndef AIQ_CONVERSE_H
#define AIQ_CONVERSE_H

#include "aiq_err.h"

#include <jansson.h>
#include <stdbool.h>

#define AIQ_CONVERSE_MESSAGES_MAX 200 /* aiq's bound; Bedrock sets none in the model */
#define AIQ_CONVERSE_CONTENT_MAX  50  /* content blocks per message, aiq's bound */
#define AIQ_CONVERSE_SYSTEM_MAX   50  /* system blocks, aiq's bound */

/* The ConverseRequest members a job passes through under the same name, NULL-terminated:
 * toolConfig, guardrailConfig, additionalModelRequestFields,
 * additionalModelResponseFieldPaths, performanceConfig, promptVariables, requestMetadata,
 * serviceTier. */
extern const char *const aiq_converse_fields[];

/* Each returns 0 when v is a valid value of that part of a ConverseRequest, else
 * AIQ_EINVAL with err naming the field by its path in the job ("messages[0].content[1]:
 * ..."). Borrow v. */
int aiq_converse_check_messages(const json_t *v, aiq_err_t *err);
int aiq_converse_check_system(const json_t *v, aiq_err_t *err); /* the array form */
/* name is one of aiq_converse_fields (others: AIQ_EINVAL). */
int aiq_converse_check_field(const char *name, const json_t *v, aiq_err_t *err);

/* requestMetadata keys and values: botocore's pattern [a-zA-Z0-9\s:_@$#=/+,-.], keys 1..256
 * and values 0..256 characters. */
bool aiq_converse_metadata_ok(const char *s, bool key);

/* True when id matches the whole of the modelId pattern of botocore's bedrock-runtime model
 * (ConversationalModelId) and is not "." or "..": those match the pattern, but as a path
 * segment every HTTP stack collapses them, so no model can be called by them. */
bool aiq_model_id_valid(const char *id);

#endif
