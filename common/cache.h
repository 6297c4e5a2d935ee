#ifndef AIQ_CACHE_H
#define AIQ_CACHE_H
/* placeholder: being written */
#endif
