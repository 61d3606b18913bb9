#ifndef DEDUP_CHIREDIS_SHIM_H
#define DEDUP_CHIREDIS_SHIM_H
#include <hiredis/hiredis.h>
#endif
