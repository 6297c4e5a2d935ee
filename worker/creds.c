#include "creds.h"
