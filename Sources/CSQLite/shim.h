// SQLite for the EdgeQLog module (the only importer).
#include <sqlite3.h>

// SQLITE_TRANSIENT is a macro casting -1 to a function pointer, which Swift cannot
// import; this constant gives the same value a name Swift can use.
static const sqlite3_destructor_type edgeq_sqlite_transient = (sqlite3_destructor_type)-1;
