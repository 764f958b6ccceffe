/* The C library this guest needs, and no more: a policy imports nothing but
 * the host's log, so there is no WASI libc to link, and a bundled one would
 * pull in imports the host refuses.
 *
 * The allocator keeps one free list per power-of-two size class: a block is
 * reused only for its own class, so nothing is ever split or merged, and the
 * waste is at most half a block. The guest's allocations are the slot array
 * (doubling) and the per-call event and victim lists, which recycle the same
 * few classes, so this is enough. Memory grows by whole pages and is never
 * returned (wasm cannot shrink a memory). Running out is a trap, as in a Rust
 * guest: the host then recovers from its own LRU order. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 65536u
#define HEADER 8u
#define MIN_CLASS 4u
#define CLASSES 32u

extern unsigned char __heap_base;

/* A free block's payload holds the next free block of its class. */
static void *free_lists[CLASSES];
static uintptr_t heap_top;

static unsigned class_of(size_t total) {
    unsigned c = MIN_CLASS;
    while (c < CLASSES - 1 && ((size_t)1 << c) < total) c++;
    return c;
}

static void *carve(size_t bytes) {
    if (heap_top == 0) heap_top = ((uintptr_t)&__heap_base + 7u) & ~(uintptr_t)7u;
    uintptr_t end = heap_top + bytes;
    if (end < heap_top) return NULL;
    uintptr_t limit = (uintptr_t)__builtin_wasm_memory_size(0) * PAGE;
    if (end > limit) {
        size_t pages = (end - limit + PAGE - 1) / PAGE;
        if (__builtin_wasm_memory_grow(0, pages) == (size_t)-1) return NULL;
    }
    void *block = (void *)heap_top;
    heap_top = end;
    return block;
}

void *malloc(size_t size) {
    if (size > ((size_t)1 << (CLASSES - 1)) - HEADER) return NULL;
    unsigned c = class_of(size + HEADER);
    uint8_t *block = free_lists[c];
    if (block) {
        free_lists[c] = *(void **)(block + HEADER);
    } else {
        block = carve((size_t)1 << c);
        if (!block) return NULL;
    }
    *(uint64_t *)block = c;
    return block + HEADER;
}

void free(void *ptr) {
    if (!ptr) return;
    uint8_t *block = (uint8_t *)ptr - HEADER;
    unsigned c = (unsigned)*(uint64_t *)block;
    *(void **)ptr = free_lists[c];
    free_lists[c] = block;
}

void *realloc(void *ptr, size_t size) {
    if (!ptr) return malloc(size);
    uint8_t *block = (uint8_t *)ptr - HEADER;
    size_t room = ((size_t)1 << *(uint64_t *)block) - HEADER;
    if (size <= room) return ptr;
    void *moved = malloc(size);
    if (!moved) return NULL;
    memcpy(moved, ptr, room);
    free(ptr);
    return moved;
}

_Noreturn void abort(void) { __builtin_trap(); }

/* With bulk memory these are single instructions (memory.copy, memory.fill),
 * never calls back into themselves. */
void *memcpy(void *restrict dst, const void *restrict src, size_t n) {
    __builtin_memcpy(dst, src, n);
    return dst;
}

void *memmove(void *dst, const void *src, size_t n) {
    __builtin_memmove(dst, src, n);
    return dst;
}

void *memset(void *dst, int c, size_t n) {
    __builtin_memset(dst, c, n);
    return dst;
}

size_t strlen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}
