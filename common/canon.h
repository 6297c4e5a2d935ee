#ifndef AIQ_CANON_H
#define AIQ_CANON_H
/* placeholder: being written */
#endif
