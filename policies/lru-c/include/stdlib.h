/* The few C library functions the generated bindings and lru.c use, for a
 * freestanding wasm32 build without a C library (libc.c defines them). */
#ifndef LRU_C_STDLIB_H
#define LRU_C_STDLIB_H
#include <stddef.h>
void *malloc(size_t size);
void *realloc(void *ptr, size_t size);
void free(void *ptr);
_Noreturn void abort(void);
#endif
