#ifndef AIQ_CREDS_H
#define AIQ_CREDS_H
/* placeholder: being written */
#endif
