#ifndef AIQ_OPS_H
#define AIQ_OPS_H
/* placeholder: being written */
#endif
