#ifndef AIQ_AIMD_H
#define AIQ_AIMD_H
/* placeholder: being written */
#endif
