#ifndef AIQ_PROVIDER_H
#define AIQ_PROVIDER_H
/* placeholder: being written */
#endif
