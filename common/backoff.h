#ifndef AIQ_BACKOFF_H
#define AIQ_BACKOFF_H
/* placeholder: being written */
#endif
