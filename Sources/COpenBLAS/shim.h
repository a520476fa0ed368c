// OpenBLAS's CBLAS interface for the EdgeQNet module and EdgeQModel (the plant model's
// least-squares sums).
#include <cblas.h>
// openblas_set_num_threads is declared by Debian's cblas.h (OpenBLAS flavour); training
// calls it with 1 so BLAS threads never compete with the decision path for the cores.
