#include "canon.h"
