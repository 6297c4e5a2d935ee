#ifndef AIQ_BREAKER_H
#define AIQ_BREAKER_H
/* placeholder: being written */
#endif
