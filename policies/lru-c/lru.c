/* lru-c: least recently used, written in C against shadowcat:policy@0.2.0.
 *
 * The twin of the Rust `lru` policy (policies/lru), decision for decision:
 * the host tests run both side by side through a table with pins and compare
 * every answer (tests/quality.rs). It exists to show that a policy needs only
 * the WIT file: the bindings come from `wit-bindgen c`, the module from clang
 * and lld, the component from the same tool as every Rust guest, and the host
 * loads it like any other.
 *
 * Semantics (those of policies/lru/src/lru.rs):
 * - `inserted` and `accessed` mean "touched now": the session moves to the
 *   most recent end (or is added if unknown). A session still held in the
 *   same slot under an older id (its removal was missed) is replaced.
 * - `removed` (any cause) forgets the session; unknown or stale ids are
 *   ignored. `refused` events are not asked for.
 * - `victims`: the least recently touched sessions, oldest first. The order
 *   changes only with events, so it declares `stable-order`. Candidates are
 *   only sent to policies that declare `sampled`, which this one does not.
 * - No config keys; no quotas; `maintain` does nothing.
 * - Every packed list is validated before anything in it is applied, with
 *   the SDK's error messages; a call before `create` is an error.
 *
 * State: a doubly linked list threaded through an array indexed by the
 * session id's slot (its low 32 bits), so every event is O(1) with no
 * hashing, and memory follows the largest slot seen. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "eviction_policy.h"

#define NAME "lru-c"
#define VERSION "0.1.0"
#define NIL UINT32_MAX
#define EVENT_WORDS 4u
#define USAGE_WORDS 6u
#define VICTIMS_HEADER_WORDS 3u

typedef struct {
    uint64_t id;
    /* Neighbours by slot: toward the least (prev) and most (next) recent. */
    uint32_t prev, next;
    uint8_t live;
} node_t;

static node_t *nodes;
static uint32_t slots;
static uint32_t oldest = NIL, newest = NIL;
static bool created;

/* ---- error strings ------------------------------------------------------ */

typedef struct {
    char text[160];
    size_t len;
} message_t;

static void put(message_t *m, const char *s) {
    while (*s && m->len < sizeof m->text) m->text[m->len++] = *s++;
}

static void put_u64(message_t *m, uint64_t v) {
    char digits[20];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n && m->len < sizeof m->text) m->text[m->len++] = digits[--n];
}

static bool fail(eviction_policy_string_t *err, const message_t *m) {
    eviction_policy_string_dup_n(err, m->text, m->len);
    return false;
}

static bool not_created(eviction_policy_string_t *err) {
    eviction_policy_string_dup(err, "policy called before `create` succeeded");
    return false;
}

/* ---- the order ---------------------------------------------------------- */

/* Room for `slot`; false without the memory (the session then goes
 * untracked, and the host fills any shortfall from its own order). */
static bool reserve(uint32_t slot) {
    if (slot < slots) return true;
    uint64_t want = (uint64_t)slot + 1;
    uint64_t doubled = (uint64_t)slots * 2;
    uint64_t count = want > doubled ? want : doubled;
    if (count < 64) count = 64;
    if (count > NIL) count = NIL;
    node_t *grown = realloc(nodes, (size_t)(count * sizeof(node_t)));
    if (!grown) return false;
    for (uint64_t s = slots; s < count; s++) grown[s].live = 0;
    nodes = grown;
    slots = (uint32_t)count;
    return true;
}

static void unlink_slot(uint32_t s) {
    node_t *n = &nodes[s];
    if (n->prev == NIL) oldest = n->next; else nodes[n->prev].next = n->next;
    if (n->next == NIL) newest = n->prev; else nodes[n->next].prev = n->prev;
}

static void link_newest(uint32_t s) {
    nodes[s].prev = newest;
    nodes[s].next = NIL;
    if (newest == NIL) oldest = s; else nodes[newest].next = s;
    newest = s;
}

static void touch(uint64_t id) {
    uint32_t s = (uint32_t)id;
    if (s == NIL || !reserve(s)) return;
    if (nodes[s].live) unlink_slot(s);
    nodes[s].id = id;
    nodes[s].live = 1;
    link_newest(s);
}

static void forget(uint64_t id) {
    uint32_t s = (uint32_t)id;
    if (s < slots && nodes[s].live && nodes[s].id == id) {
        unlink_slot(s);
        nodes[s].live = 0;
    }
}

/* ---- events ------------------------------------------------------------- */

/* Checks one event as the SDK does: kinds 0-3, removal causes 0-6, refusal
 * reasons 0-1. */
static bool check_event(const char *what, size_t i, uint64_t head, eviction_policy_string_t *err) {
    unsigned kind = (unsigned)(head & 0xff);
    unsigned detail = (unsigned)((head >> 8) & 0xff);
    message_t m = {.len = 0};
    if (kind > 3) {
        put(&m, what), put(&m, ": event "), put_u64(&m, i);
        put(&m, ": unknown event kind "), put_u64(&m, kind);
        return fail(err, &m);
    }
    if (kind == 2 && detail > 6) {
        put(&m, what), put(&m, ": event "), put_u64(&m, i);
        put(&m, ": unknown removal cause "), put_u64(&m, detail);
        return fail(err, &m);
    }
    if (kind == 3 && detail > 1) {
        put(&m, what), put(&m, ": event "), put_u64(&m, i);
        put(&m, ": unknown refusal reason "), put_u64(&m, detail);
        return fail(err, &m);
    }
    return true;
}

/* Validates `count` events, then applies them: a malformed list applies
 * nothing. */
static bool apply(const char *what, const uint64_t *events, size_t count,
                  eviction_policy_string_t *err) {
    for (size_t i = 0; i < count; i++) {
        if (!check_event(what, i, events[i * EVENT_WORDS], err)) return false;
    }
    for (size_t i = 0; i < count; i++) {
        const uint64_t *e = &events[i * EVENT_WORDS];
        switch (e[0] & 0xff) {
        case 0: /* inserted */
        case 1: /* accessed */
            touch(e[1]);
            break;
        case 2: /* removed */
            forget(e[1]);
            break;
        default: /* refused: not asked for */
            break;
        }
    }
    return true;
}

static bool not_multiple(const char *what, size_t words, unsigned stride,
                         eviction_policy_string_t *err) {
    message_t m = {.len = 0};
    put(&m, what), put(&m, ": "), put_u64(&m, words);
    put(&m, " words is not a multiple of "), put_u64(&m, stride);
    put(&m, " words per entry");
    return fail(err, &m);
}

/* ---- the exports -------------------------------------------------------- */

bool exports_shadowcat_policy_policy_create(exports_shadowcat_policy_policy_table_t *table,
                                            exports_shadowcat_policy_policy_config_t *config,
                                            eviction_policy_string_t *err) {
    (void)table;
    bool ok = config->len == 0;
    if (!ok) {
        message_t m = {.len = 0};
        put(&m, NAME " policy: unknown config key `");
        eviction_policy_string_t *key = &config->ptr[0].f0;
        for (size_t i = 0; i < key->len && m.len < sizeof m.text; i++) m.text[m.len++] = (char)key->ptr[i];
        put(&m, "`; accepted keys: none");
        fail(err, &m);
    }
    exports_shadowcat_policy_policy_config_free(config);
    if (!ok) return false;
    /* A second `create` starts over, as the SDK's guests do. */
    free(nodes);
    nodes = NULL;
    slots = 0;
    oldest = newest = NIL;
    created = true;
    return true;
}

void exports_shadowcat_policy_policy_info(exports_shadowcat_policy_policy_policy_info_t *ret) {
    eviction_policy_string_dup(&ret->name, NAME);
    eviction_policy_string_dup(&ret->version, VERSION);
    ret->needs = SHADOWCAT_POLICY_TYPES_NEEDS_INSERTED | SHADOWCAT_POLICY_TYPES_NEEDS_ACCESSED |
                 SHADOWCAT_POLICY_TYPES_NEEDS_REMOVED;
    ret->traits = SHADOWCAT_POLICY_TYPES_TRAITS_STABLE_ORDER;
    ret->batch_size = 256;
    ret->sample_size = 64;
}

bool exports_shadowcat_policy_policy_observe(eviction_policy_list_u64_t *events,
                                             eviction_policy_string_t *err) {
    bool ok;
    if (!created) {
        ok = not_created(err);
    } else if (events->len % EVENT_WORDS != 0) {
        ok = not_multiple("observe", events->len, EVENT_WORDS, err);
    } else {
        ok = apply("observe", events->ptr, events->len / EVENT_WORDS, err);
    }
    eviction_policy_list_u64_free(events);
    return ok;
}

bool exports_shadowcat_policy_policy_victims(uint32_t count, eviction_policy_list_u64_t *input,
                                             eviction_policy_list_u64_t *ret,
                                             eviction_policy_string_t *err) {
    bool ok = true;
    const uint64_t *words = input->ptr;
    size_t len = input->len;
    message_t m = {.len = 0};
    if (!created) {
        ok = not_created(err);
    } else if (len < VICTIMS_HEADER_WORDS) {
        put(&m, "victims: input of "), put_u64(&m, len);
        put(&m, " words is shorter than its 3-word header (event count, arriving key, arriving size)");
        ok = fail(err, &m);
    } else {
        uint64_t events = words[0];
        size_t rest = len - VICTIMS_HEADER_WORDS;
        if (events > rest / EVENT_WORDS) {
            put(&m, "victims: input announces "), put_u64(&m, events);
            put(&m, " events but holds only "), put_u64(&m, rest);
            put(&m, " words after the header");
            ok = fail(err, &m);
        } else if (words[2] > UINT32_MAX) {
            put(&m, "victims: arriving size "), put_u64(&m, words[2]);
            put(&m, " does not fit in 32 bits");
            ok = fail(err, &m);
        } else if ((rest - events * EVENT_WORDS) % 4 != 0) {
            ok = not_multiple("victims candidates", rest - events * EVENT_WORDS, 4, err);
        } else {
            ok = apply("victims", words + VICTIMS_HEADER_WORDS, (size_t)events, err);
        }
    }
    eviction_policy_list_u64_free(input);
    if (!ok) return false;
    ret->ptr = NULL;
    ret->len = 0;
    size_t n = 0;
    for (uint32_t s = oldest; s != NIL && n < count; s = nodes[s].next) n++;
    if (n == 0) return true;
    ret->ptr = malloc(n * sizeof(uint64_t));
    /* Without memory for the answer, the host chooses: an empty answer. */
    if (!ret->ptr) return true;
    for (uint32_t s = oldest; s != NIL && ret->len < n; s = nodes[s].next) {
        ret->ptr[ret->len++] = nodes[s].id;
    }
    return true;
}

bool exports_shadowcat_policy_policy_adjust_quotas(eviction_policy_list_u64_t *usage,
                                                   eviction_policy_list_u64_t *ret,
                                                   eviction_policy_string_t *err) {
    bool ok = true;
    if (!created) {
        ok = not_created(err);
    } else if (usage->len % USAGE_WORDS != 0) {
        ok = not_multiple("adjust-quotas usage", usage->len, USAGE_WORDS, err);
    }
    eviction_policy_list_u64_free(usage);
    ret->ptr = NULL;
    ret->len = 0;
    return ok;
}

bool exports_shadowcat_policy_policy_maintain(uint64_t now, eviction_policy_string_t *err) {
    (void)now;
    return created ? true : not_created(err);
}
