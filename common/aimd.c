#include "aimd.h"
