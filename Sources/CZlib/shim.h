// zlib for the fleet batches' deflated body (EdgeQLog's FleetBatch, the only product importer)
// and the tests' comparison with compressed JSON (docs/fleet.md "Payload").
#include <zlib.h>
