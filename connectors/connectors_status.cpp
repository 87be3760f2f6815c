// Shared helpers of the connectors (see kafka.h).
#include "connectors/kafka.h"
