#include "breaker.h"
