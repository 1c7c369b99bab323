/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Page-backed secret buffers. Layout of one allocation:
 *   [guard page][header + data, rounded up to pages][guard page]
 * The header lives on the locked pages too, so the size is never on an unlocked page.
 * mmap results are checked against MAP_FAILED (never NULL).
 *
 * Packed secrets: one mapping per secret costs 2-3 VMAs, and vm.max_map_count (65530) is
 * reached at ~32k secrets, after which every mmap in the process fails. Small secrets therefore
 * share chunks laid out like one page secret:
 *   [guard page][slot][slot]...[slot][guard page]
 * Each slot is a Secret header plus data (SECRET_PACKED_HEADER + capacity bytes). Chunks of a
 * size class start at 16 KiB and double up to 1 MiB. Chunk bookkeeping (a bitmap of used slots,
 * 1 bit per slot) is on the ordinary heap: it says which slots are in use, never what is in them,
 * and keeping it out of the slots means a free slot is all zero. A freed slot is wiped before its
 * bit is cleared. A chunk that becomes empty is unmapped unless it is the only empty chunk of its
 * class (kept so that one secret allocated and freed in a loop does not map and unmap a chunk
 * each time). One mutex protects the pool; pthread_atfork keeps it usable in a forked child.
 */
#include "secret.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "alloc.h"

typedef struct PackChunk PackChunk;

struct Secret {
    size_t size;     /* visible size */
    size_t capacity; /* bytes available after the header */
    union {
        size_t map_size;  /* page secret: whole mapping including guards */
        PackChunk *chunk; /* packed secret: the chunk holding this slot */
    };
    bool locked;
    bool packed;
    _Alignas(16) uint8_t data[];
};

static_assert(offsetof(Secret, data) == SECRET_PACKED_HEADER, "packed header size");
static_assert(sizeof(Secret) == SECRET_PACKED_HEADER, "packed header size");

static atomic_bool allow_unlocked;

void secret_set_allow_unlocked(bool allow) {
    atomic_store(&allow_unlocked, allow);
}

static size_t page_size(void) {
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}

/* Maps [guard][inner bytes, read-write, locked, not dumped, wiped on fork][guard]. inner is a
 * multiple of the page size. Returns the first usable byte, or NULL (-ENOMEM). */
static uint8_t *map_locked(size_t inner, bool *ret_locked) {
    size_t ps = page_size(), total = inner + 2 * ps;
    uint8_t *base;
    bool locked = true;

    base = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        return NULL;
    if (mprotect(base + ps, inner, PROT_READ | PROT_WRITE) < 0) {
        (void)munmap(base, total);
        return NULL;
    }
    (void)madvise(base + ps, inner, MADV_DONTDUMP);
    (void)madvise(base + ps, inner, MADV_WIPEONFORK);
    if (mlock(base + ps, inner) < 0) {
        if (!atomic_load(&allow_unlocked)) {
            (void)munmap(base, total);
            return NULL;
        }
        locked = false;
    }
    *ret_locked = locked;
    return base + ps;
}

/* Wipes, unlocks and unmaps what map_locked() returned. */
static void unmap_locked(uint8_t *p, size_t inner) {
    size_t ps = page_size();
    explicit_bzero(p, inner);
    (void)munlock(p, inner);
    (void)munmap(p - ps, inner + 2 * ps);
}

static uint8_t *kept_take(size_t inner, bool *ret_locked);

int secret_new(size_t size, Secret **ret) {
    size_t ps = page_size(), inner;
    uint8_t *p;
    Secret *s;
    bool locked;

    if (!ret)
        return -EINVAL;
    if (nt_alloc_should_fail())
        return -ENOMEM;
    if (size > SIZE_MAX / 2 - 3 * ps)
        return -ENOMEM;

    inner = (sizeof(Secret) + size + ps - 1) / ps * ps;
    p = kept_take(inner, &locked);
    if (!p)
        p = map_locked(inner, &locked);
    if (!p)
        return -ENOMEM;

    s = (Secret *)p;
    s->size = size;
    s->capacity = inner - sizeof(Secret);
    s->map_size = inner + 2 * ps;
    s->locked = locked;
    *ret = s;
    return 0;
}

/* ---- packed secrets ---- */

#define PACK_CLASSES 3
#define PACK_CHUNK_MIN ((size_t)16 * 1024)
#define PACK_CHUNK_MAX ((size_t)1024 * 1024)

struct PackChunk {
    uint8_t *slots;         /* first slot (the page after the leading guard) */
    size_t inner;           /* bytes of slots, locked */
    size_t n_slots;         /* slots in this chunk */
    size_t n_used;          /* slots in use */
    size_t hint;            /* no free slot below word hint of used[] */
    unsigned cls;           /* size class */
    bool locked;            /* mlock succeeded */
    PackChunk *prev, *next; /* in avail or full of the class */
    uint64_t used[];        /* bit i set: slot i in use (bits past n_slots are set too) */
};

typedef struct PackClass {
    PackChunk *avail; /* chunks with a free slot */
    PackChunk *full;  /* chunks without */
    size_t n_chunks;  /* mapped chunks of this class */
    size_t n_empty;   /* of which entirely free (at most 1) */
} PackClass;

static pthread_mutex_t pack_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t pack_once = PTHREAD_ONCE_INIT;
static PackClass pack_classes[PACK_CLASSES];
static SecretPackedStats pack_stats;

static const size_t pack_slot_size[PACK_CLASSES] = {64, 128, 256};

static void pack_lock(void) {
    (void)pthread_mutex_lock(&pack_mutex);
}

static void pack_unlock(void) {
    (void)pthread_mutex_unlock(&pack_mutex);
}

/* A fork while another thread holds the mutex would leave it locked forever in the child. */
static void kept_forget_in_child(void);

static void pack_child(void) {
    kept_forget_in_child();
    pack_unlock();
}

static void pack_init(void) {
    (void)pthread_atfork(pack_lock, pack_unlock, pack_child);
}

static pthread_mutex_t *pack_guard(void) {
    (void)pthread_once(&pack_once, pack_init);
    pack_lock();
    return &pack_mutex;
}

static void pack_unlockp(pthread_mutex_t **m) {
    if (*m)
        (void)pthread_mutex_unlock(*m);
}

#define PACK_LOCKED() _cleanup_(pack_unlockp) _unused_ pthread_mutex_t *pack_guard_ = pack_guard()

static void list_remove(PackChunk **head, PackChunk *c) {
    if (c->prev)
        c->prev->next = c->next;
    else
        *head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void list_push(PackChunk **head, PackChunk *c) {
    c->prev = NULL;
    c->next = *head;
    if (*head)
        (*head)->prev = c;
    *head = c;
}

/* Maps a new chunk for class cls and puts it on the class' avail list. Called locked. */
static PackChunk *chunk_new_locked(unsigned cls) {
    PackClass *pc = &pack_classes[cls];
    size_t ps = page_size(), inner, n_slots, n_words;
    PackChunk *c;

    inner = PACK_CHUNK_MIN << MIN(pc->n_chunks, (size_t)6);
    inner = MIN(inner, PACK_CHUNK_MAX);
    inner = (inner + ps - 1) / ps * ps;
    n_slots = inner / pack_slot_size[cls];
    n_words = (n_slots + 63) / 64;
    c = calloc(1, sizeof(PackChunk) + n_words * sizeof(uint64_t));
    if (!c)
        return NULL;
    c->slots = map_locked(inner, &c->locked);
    if (!c->slots) {
        free(c);
        return NULL;
    }
    c->inner = inner;
    c->n_slots = n_slots;
    c->cls = cls;
    if (n_slots % 64)
        c->used[n_words - 1] = ~UINT64_C(0) << (n_slots % 64);
    list_push(&pc->avail, c);
    pc->n_chunks++;
    pc->n_empty++;
    pack_stats.chunks++;
    pack_stats.slots_total += n_slots;
    pack_stats.bytes_locked += inner;
    pack_stats.bytes_mapped += inner + 2 * ps;
    return c;
}

/* Unmaps an empty chunk (already off its list). Called locked. */
static void chunk_free_locked(PackChunk *c) {
    size_t ps = page_size();
    pack_classes[c->cls].n_chunks--;
    pack_stats.chunks--;
    pack_stats.slots_total -= c->n_slots;
    pack_stats.bytes_locked -= c->inner;
    pack_stats.bytes_mapped -= c->inner + 2 * ps;
    unmap_locked(c->slots, c->inner);
    free(c);
}

static int packed_alloc(unsigned cls, size_t size, Secret **ret) {
    PACK_LOCKED();
    PackClass *pc = &pack_classes[cls];
    PackChunk *c = pc->avail;
    size_t w, bit, slot = pack_slot_size[cls];
    Secret *s;

    if (!c) {
        c = chunk_new_locked(cls);
        if (!c)
            return -ENOMEM;
    }
    for (w = c->hint; c->used[w] == ~UINT64_C(0); w++)
        assert(w + 1 < (c->n_slots + 63) / 64);
    c->hint = w;
    bit = (size_t)__builtin_ctzll(~c->used[w]);
    c->used[w] |= UINT64_C(1) << bit;
    if (c->n_used++ == 0)
        pc->n_empty--;
    if (c->n_used == c->n_slots) {
        list_remove(&pc->avail, c);
        list_push(&pc->full, c);
    }
    pack_stats.slots_used++;

    /* A free slot is all zero (fresh mapping, or wiped by secret_free()). */
    s = (Secret *)(c->slots + (w * 64 + bit) * slot);
    s->size = size;
    s->capacity = slot - sizeof(Secret);
    s->chunk = c;
    s->locked = c->locked;
    s->packed = true;
    *ret = s;
    return 0;
}

static void packed_free(Secret *s) {
    PackChunk *c = s->chunk;
    size_t slot = pack_slot_size[c->cls], off = (size_t)((uint8_t *)s - c->slots), i;

    /* A header that does not point back at its own slot is memory corruption. */
    if ((uint8_t *)s < c->slots || off >= c->inner || off % slot != 0)
        abort();
    i = off / slot;
    /* The slot is still ours until its bit is cleared: wipe it outside the lock. */
    explicit_bzero(s, slot);

    PACK_LOCKED();
    PackClass *pc = &pack_classes[c->cls];
    if (c->n_used == c->n_slots) {
        list_remove(&pc->full, c);
        list_push(&pc->avail, c);
    }
    c->used[i / 64] &= ~(UINT64_C(1) << (i % 64));
    c->hint = MIN(c->hint, i / 64);
    c->n_used--;
    pack_stats.slots_used--;
    if (c->n_used > 0)
        return;
    if (pc->n_empty > 0) {
        list_remove(&pc->avail, c);
        chunk_free_locked(c);
    } else
        pc->n_empty++;
}

int secret_new_packed(size_t size, Secret **ret) {
    size_t slot = SECRET_PACKED_SLOT_SIZE(size);

    if (!ret)
        return -EINVAL;
    if (slot == 0)
        return secret_new(size, ret);
    if (nt_alloc_should_fail())
        return -ENOMEM;
    for (unsigned cls = 0; cls < PACK_CLASSES; cls++)
        if (pack_slot_size[cls] == slot)
            return packed_alloc(cls, size, ret);
    return -EINVAL; /* unreachable: SECRET_PACKED_SLOT_SIZE() returns a class size */
}

int secret_new_packed_copy(const void *data, size_t size, Secret **ret) {
    Secret *s = NULL;
    int r = secret_new_packed(size, &s);
    if (r < 0)
        return r;
    if (size > 0)
        memcpy(s->data, data, size);
    *ret = s;
    return 0;
}

size_t secret_packed_cost(size_t n) {
    size_t ps = page_size(), slot = SECRET_PACKED_SLOT_SIZE(n);
    if (slot > 0)
        return slot;
    if (n > SIZE_MAX / 2 - 3 * ps)
        return SIZE_MAX;
    return (sizeof(Secret) + n + ps - 1) / ps * ps;
}

SecretPackedStats secret_packed_stats(void) {
    PACK_LOCKED();
    return pack_stats;
}

int secret_new_copy(const void *data, size_t size, Secret **ret) {
    Secret *s = NULL;
    int r = secret_new(size, &s);
    if (r < 0)
        return r;
    if (size > 0)
        memcpy(s->data, data, size);
    *ret = s;
    return 0;
}

/* ---- kept page secrets ---- */

/* A freed page secret's mapping, wiped, is kept (still locked, not dumped, wiped on fork, between
 * its guard pages) for the next secret_new() of the same size, instead of munlock + munmap now
 * and mmap + mprotect + 2 madvise + mlock then: a daemon's per-operation secrets (keys derived
 * for one request, one plaintext) reuse a few mappings. Bounded: KEPT_MAX mappings of at most
 * KEPT_MAX_INNER bytes each; more are unmapped as before. Under the pack mutex. */
#define KEPT_MAX 16
#define KEPT_MAX_INNER ((size_t)64 * 1024)

typedef struct Kept {
    uint8_t *p;
    size_t inner;
    bool locked;
} Kept;

static Kept kept[KEPT_MAX];
static size_t n_kept;

/* A forked child: mlock is not inherited and MADV_WIPEONFORK emptied the pages; the kept
 * mappings are not reused there (they stay mapped, zero, until the child exits). */
static void kept_forget_in_child(void) {
    n_kept = 0;
}

static uint8_t *kept_take(size_t inner, bool *ret_locked) {
    bool allow = atomic_load(&allow_unlocked);
    if (inner > KEPT_MAX_INNER)
        return NULL;
    PACK_LOCKED();
    for (size_t i = n_kept; i-- > 0;)
        if (kept[i].inner == inner && (kept[i].locked || allow)) {
            uint8_t *p = kept[i].p;
            *ret_locked = kept[i].locked;
            kept[i] = kept[--n_kept];
            return p; /* all zero: wiped when it was freed */
        }
    return NULL;
}

/* Keeps a wiped mapping; false when full or too large (the caller unmaps it). */
static bool kept_put(uint8_t *p, size_t inner, bool locked) {
    if (inner > KEPT_MAX_INNER)
        return false;
    PACK_LOCKED();
    if (n_kept >= KEPT_MAX)
        return false;
    kept[n_kept++] = (Kept){.p = p, .inner = inner, .locked = locked};
    return true;
}

size_t secret_kept_count(void) {
    PACK_LOCKED();
    return n_kept;
}

Secret *secret_free(Secret *s) {
    size_t ps = page_size();

    if (!s)
        return NULL;
    if (s->packed) {
        packed_free(s);
        return NULL;
    }
    /* An all-zero header: a forked child freeing a secret that MADV_WIPEONFORK emptied. The
     * mapping stays in the child (its size is gone); there is nothing left to wipe. */
    if (s->map_size == 0)
        return NULL;
    {
        size_t inner = s->map_size - 2 * ps;
        bool locked = s->locked;
        uint8_t *p = (uint8_t *)s;
        explicit_bzero(p, inner);
        if (!kept_put(p, inner, locked)) {
            (void)munlock(p, inner);
            (void)munmap(p - ps, inner + 2 * ps);
        }
    }
    return NULL;
}

uint8_t *secret_data(Secret *s) {
    return s->data;
}

const uint8_t *secret_const_data(const Secret *s) {
    return s->data;
}

size_t secret_size(const Secret *s) {
    return s->size;
}

void secret_truncate(Secret *s, size_t new_size) {
    if (new_size < s->size) {
        explicit_bzero(s->data + new_size, s->size - new_size);
        s->size = new_size;
    }
}

bool secret_is_locked(const Secret *s) {
    return s->locked;
}

int nt_harden_process(void) {
    struct rlimit rl = {0, 0};
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        return negative_errno();
    if (setrlimit(RLIMIT_CORE, &rl) < 0)
        return negative_errno();
    return 0;
}

int nt_check_mlock(void) {
    size_t ps = page_size();
    void *p = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int r = 0;
    if (p == MAP_FAILED)
        return -ENOMEM;
    if (mlock(p, ps) < 0)
        r = negative_errno();
    else
        (void)munlock(p, ps);
    (void)munmap(p, ps);
    return r;
}
