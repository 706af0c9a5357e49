/* The limited-API (abi3) build of _fastconv.c: setup.py compiles it as _fastconv.abi3.so,
 * which every CPython >= 3.9 can load (the full-API build serves only the CPython that built
 * it). */
#define Py_LIMITED_API 0x03090000
#include "_fastconv.c"
