/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libvhsm: one VhsmClient is one unix stream connection to vhsmd. A call builds one request
 * frame in the connection's output buffer, sends it with one write and reads the response with
 * as few reads as the kernel allows (usually one). Calls on a connection are serialized by its
 * mutex. Both buffers are wiped after every call: requests and responses carry plaintext.
 * After any transport or framing error the connection is marked broken (-ENOTCONN afterwards):
 * the byte stream can no longer be trusted to be aligned on frames.
 */
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"
#include "vhsm-client.h"

#define CLIENT_READ_CHUNK (64u * 1024u)
/* Default busy-poll window for replies (microseconds); see spin_window(). */
#define CLIENT_DEFAULT_SPIN_US 0 /* off: pipeline (VhsmBatch) for throughput */

/* Received bytes: the replies of the call or batch in progress. */
typedef struct InBuf {
    uint8_t *data;
    size_t cap;
    size_t len;
} InBuf;

typedef struct VhsmBatch VhsmBatch;

struct VhsmClient {
    int fd;
    bool broken;
    pthread_mutex_t lock;
    uint32_t next_id;
    unsigned timeout_ms;
    VhsmBuf out;
    InBuf in; /* the reply of the current call (wiped at its end) */
    /* Batches sent and not yet fully answered, oldest first (= the order of their replies on the
     * wire), linked through VhsmBatch.next. */
    VhsmBatch *flight_head, *flight_tail;
    /* Adaptive busy-poll (vhsm_set_spin): the most it may spin for a reply (µs; -1 = unset, use
     * $VHSM_SPIN_US) and a moving average of the observed reply latency (µs, 1/8 weight). */
    int32_t spin_max_us;
    int64_t lat_avg_us;
};

static __thread char last_error[512];

static void set_error(const char *fmt, ...) _printf_(1, 2);
static void set_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
}

const char *vhsm_last_error(void) {
    return last_error;
}

void vhsm_free_secret(void *p, size_t len) {
    if (!p)
        return;
    explicit_bzero(p, len);
    free(p);
}

static int apply_timeout(int fd, unsigned timeout_ms);
static void inbuf_done(InBuf *in);
static int flight_drain(VhsmClient *c);

int vhsm_connect(const char *path, VhsmClient **ret) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    VhsmClient *c;
    int fd;

    if (!ret)
        return -EINVAL;
    if (!path)
        path = getenv("VHSM_SOCKET");
    if (!path || !*path)
        path = VHSM_DEFAULT_SOCKET;
    if (strlen(path) >= sizeof sa.sun_path) {
        set_error("socket path too long: %s", path);
        return -ENAMETOOLONG;
    }
    strcpy(sa.sun_path, path);

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return negative_errno();
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int r = negative_errno();
        set_error("cannot connect to vhsmd at %s: %s", path, strerror(-r));
        (void)close(fd);
        return r;
    }
    if (apply_timeout(fd, 120000) < 0) {
        int r = negative_errno();
        (void)close(fd);
        return r;
    }
    c = calloc(1, sizeof *c);
    if (!c) {
        (void)close(fd);
        return -ENOMEM;
    }
    c->fd = fd;
    c->out = VHSM_BUF_INIT;
    c->timeout_ms = 120000;
    c->next_id = 1;
    c->spin_max_us = -1;
    (void)pthread_mutex_init(&c->lock, NULL);
    *ret = c;
    return 0;
}

VhsmClient *vhsm_disconnect(VhsmClient *c) {
    if (!c)
        return NULL;
    if (c->fd >= 0)
        (void)close(c->fd);
    vhsm_buf_done(&c->out);
    inbuf_done(&c->in);
    (void)pthread_mutex_destroy(&c->lock);
    free(c);
    return NULL;
}

static int apply_timeout(int fd, unsigned timeout_ms) {
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0)
        return negative_errno();
    return 0;
}

int vhsm_set_timeout(VhsmClient *c, unsigned timeout_ms) {
    int r;
    if (!c)
        return -EINVAL;
    (void)pthread_mutex_lock(&c->lock);
    r = apply_timeout(c->fd, timeout_ms);
    if (r >= 0)
        c->timeout_ms = timeout_ms;
    (void)pthread_mutex_unlock(&c->lock);
    return r;
}

int vhsm_set_spin(VhsmClient *c, unsigned max_us) {
    if (!c || max_us > VHSM_SPIN_MAX_US)
        return -EINVAL;
    (void)pthread_mutex_lock(&c->lock);
    c->spin_max_us = (int32_t)max_us;
    (void)pthread_mutex_unlock(&c->lock);
    return 0;
}

static int64_t now_ms(void) {
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for fd to be ready for events before the deadline. */
static int wait_fd(int fd, short events, int64_t deadline) {
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int timeout = -1, n;
        if (deadline > 0) {
            int64_t left = deadline - now_ms();
            if (left <= 0)
                return -ETIMEDOUT;
            timeout = (int)MIN(left, (int64_t)INT32_MAX);
        }
        n = poll(&p, 1, timeout);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return negative_errno();
        if (n == 0)
            return -ETIMEDOUT;
        return 0;
    }
}

static int64_t now_us(void) {
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Grows in so that it can take at least need more bytes (never realloc: it may hold plaintext,
 * so copy and wipe). */
static int inbuf_room(InBuf *in, size_t need) {
    size_t cap;
    uint8_t *p;
    if (in->cap - in->len >= need)
        return 0;
    if (need > SIZE_MAX / 4 - in->len)
        return -ENOMEM;
    cap = MAX(in->cap ? in->cap : CLIENT_READ_CHUNK, (size_t)CLIENT_READ_CHUNK);
    while (cap - in->len < need)
        cap *= 2;
    p = malloc(cap);
    if (!p)
        return -ENOMEM;
    if (in->data) {
        memcpy(p, in->data, in->len);
        explicit_bzero(in->data, in->cap);
        free(in->data);
    }
    in->data = p;
    in->cap = cap;
    return 0;
}

static void inbuf_wipe(InBuf *in) {
    if (in->data)
        explicit_bzero(in->data, MIN(in->len, in->cap));
    in->len = 0;
}

static void inbuf_done(InBuf *in) {
    if (in->data) {
        explicit_bzero(in->data, in->cap);
        free(in->data);
    }
    *in = (InBuf){0};
}

/* CPUs this process may run on (sched_getaffinity), cached. */
static int cpus_allowed(void) {
    static _Atomic int cached = 0;
    int n = atomic_load(&cached);
    if (n == 0) {
        cpu_set_t set;
        n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
        atomic_store(&cached, MAX(n, 1));
    }
    return n;
}

/* Threads of this process busy-polling for a reply right now. */
static _Atomic int spinners;

/* Busy-poll budget for the reply of c's current call, in microseconds (0 = block at once): at
 * most the connection's maximum (vhsm_set_spin, else $VHSM_SPIN_US, 0..VHSM_SPIN_MAX_US, default
 * CLIENT_DEFAULT_SPIN_US); none when replies have lately taken longer than that (spinning would
 * only burn the CPU the daemon needs); otherwise twice the recent reply latency plus a margin. */
static int64_t spin_env(void) {
    static _Atomic int64_t env = -1;
    int64_t v = atomic_load(&env);
    if (v < 0) {
        const char *e = getenv("VHSM_SPIN_US");
        long l = e ? strtol(e, NULL, 10) : CLIENT_DEFAULT_SPIN_US;
        v = l > 0 && l <= VHSM_SPIN_MAX_US ? l : 0;
        atomic_store(&env, v);
    }
    return v;
}

static int64_t spin_budget(const VhsmClient *c) {
    int64_t max = c->spin_max_us < 0 ? spin_env() : c->spin_max_us;
    if (max == 0 || c->lat_avg_us > max)
        return 0;
    return MIN(max, 2 * c->lat_avg_us + 10);
}

/* Takes a spinning slot if another CPU is likely free for the daemon: fewer spinners in this
 * process than allowed CPUs minus one. */
static bool spin_enter(void) {
    int n = atomic_load(&spinners);
    while (n < cpus_allowed() - 1)
        if (atomic_compare_exchange_weak(&spinners, &n, n + 1))
            return true;
    return false;
}

/* Called for each complete reply frame, in order; the frame starts at in->data + off. */
typedef int (*ReplyFn)(void *userdata, size_t index, const VhsmHeader *h, size_t off);

/* Sends out[0..out_len) and reads exactly n_replies response frames, appended to in. Writes and
 * reads are interleaved (non-blocking sends, poll for either direction), so a batch larger than
 * the socket buffers cannot deadlock against the daemon, which stops reading while its replies
 * are not read. Once everything is sent, replies are read with blocking recvs (bounded by
 * SO_RCVTIMEO), after an optional short busy-poll. Returns 0 or a transport errno
 * (-ETIMEDOUT, -EPROTO for a malformed or unexpected frame, -ECONNRESET, ...). */
typedef struct Spin {
    bool spinning;   /* holds a slot in spinners */
    int64_t sent_at; /* µs, when the last byte was sent; -1 before */
} Spin;

static int exchange_io(VhsmClient *c, const uint8_t *out, size_t out_len, size_t n_replies,
                       InBuf *in, ReplyFn fn, void *userdata, Spin *sp) {
    int64_t deadline = c->timeout_ms ? now_ms() + c->timeout_ms : 0;
    int64_t spin = spin_budget(c), spin_until = -1;
    size_t sent = 0, parsed = in->len, got = 0;
    int r;

    while (got < n_replies) {
        size_t need = VHSM_HEADER_SIZE;
        bool sending = sent < out_len;
        ssize_t n;

        if (sending) {
            n = send(c->fd, out + sent, out_len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) {
                sent += (size_t)n;
                sending = sent < out_len;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR)
                return negative_errno();
        }
        /* Hand over every complete frame received so far. */
        while (got < n_replies && in->len - parsed >= VHSM_HEADER_SIZE) {
            VhsmHeader h;
            if (vhsm_header_decode(in->data + parsed, &h) < 0 || h.kind != VHSM_KIND_RESPONSE)
                return -EPROTO;
            if (in->len - parsed - VHSM_HEADER_SIZE < h.body_len) {
                need = VHSM_HEADER_SIZE + h.body_len - (in->len - parsed);
                break;
            }
            r = fn(userdata, got, &h, parsed);
            if (r < 0)
                return r;
            parsed += VHSM_HEADER_SIZE + h.body_len;
            got++;
        }
        if (got == n_replies)
            break;
        if (deadline > 0 && now_ms() > deadline)
            return -ETIMEDOUT;
        r = inbuf_room(in, MAX(need, (size_t)CLIENT_READ_CHUNK / 4));
        if (r < 0)
            return r;
        if (!sending && sp->sent_at < 0) {
            sp->sent_at = now_us();
            if (spin > 0 && n_replies == 1)
                sp->spinning = spin_enter();
            if (!sp->spinning)
                spin = 0;
        }
        if (sending || spin > 0) {
            n = recv(c->fd, in->data + in->len, in->cap - in->len, MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                if (sending) {
                    r = wait_fd(c->fd, POLLIN | POLLOUT, deadline);
                    if (r < 0)
                        return r;
                } else {
                    /* Everything is sent: poll briefly before sleeping, which saves a
                     * sleep/wake-up pair when the reply is microseconds away. */
                    int64_t t = now_us();
                    if (spin_until < 0)
                        spin_until = t + spin;
                    if (t >= spin_until) {
                        spin = 0;
                        atomic_fetch_sub(&spinners, 1);
                        sp->spinning = false;
                    } else
                        sched_yield();
                }
                continue;
            }
        } else
            n = recv(c->fd, in->data + in->len, in->cap - in->len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return -ETIMEDOUT;
            return negative_errno();
        }
        if (n == 0)
            return got == 0 && in->len == parsed ? -ECONNRESET : -EPROTO;
        in->len += (size_t)n;
    }
    if (parsed != in->len)
        return -EPROTO; /* bytes beyond the replies we asked for */
    return 0;
}

static int exchange(VhsmClient *c, const uint8_t *out, size_t out_len, size_t n_replies, InBuf *in,
                    ReplyFn fn, void *userdata) {
    Spin sp = {.sent_at = -1};
    int r = exchange_io(c, out, out_len, n_replies, in, fn, userdata, &sp);
    if (sp.spinning)
        atomic_fetch_sub(&spinners, 1);
    if (r >= 0 && sp.sent_at >= 0 && n_replies == 1) {
        /* reply latency, for the next budget (single calls only: a batch takes longer) */
        int64_t lat = now_us() - sp.sent_at;
        c->lat_avg_us += (lat - c->lat_avg_us) / 8;
    }
    return r;
}

/* Records a transport failure: the connection is unusable from now on. */
static int transport_failed(VhsmClient *c, int r) {
    c->broken = true;
    if (r == -ETIMEDOUT)
        set_error("vhsmd did not answer in time");
    else if (r == -EPROTO)
        set_error("malformed reply from vhsmd");
    else
        set_error("connection to vhsmd failed: %s", strerror(-r));
    return r;
}

/* The result of one reply (body already validated): 0 for OK, else the daemon's negative errno,
 * with its message copied to msg (or the status name). */
static int reply_result(const VhsmHeader *h, const uint8_t *body, char *msg, size_t msg_size) {
    uint32_t e = 0;
    int r;
    if (h->code == VHSM_STATUS_OK) {
        msg[0] = 0;
        return 0;
    }
    r = vhsm_status_to_errno(h->code);
    /* Prefer the daemon's exact errno when it agrees with the status. */
    if (vhsm_body_get_u32(body, h->body_len, VHSM_TAG_ERRNO, &e) == 0 && e > 0 && e < 4096 &&
        vhsm_status_from_errno(-(int)e) == h->code)
        r = -(int)e;
    if (vhsm_body_get_str(body, h->body_len, VHSM_TAG_MESSAGE, VHSM_MAX_STRING, msg, msg_size) < 0)
        (void)snprintf(msg, msg_size, "%s", vhsm_status_to_string(h->code));
    return r;
}

/* A call in progress: holds the connection lock. */
typedef struct Call {
    VhsmClient *c;
    uint16_t opcode;
    uint32_t id;
    VhsmHeader header;
    const uint8_t *body;
    size_t len;
} Call;

static int call_begin(Call *call, VhsmClient *c, uint16_t opcode) {
    if (!c)
        return -EINVAL;
    (void)pthread_mutex_lock(&c->lock);
    if (c->broken) {
        (void)pthread_mutex_unlock(&c->lock);
        set_error("connection to vhsmd is broken");
        return -ENOTCONN;
    }
    if (c->flight_head) {
        /* Batches are in flight: their replies come first. */
        int r = flight_drain(c);
        if (r < 0) {
            (void)pthread_mutex_unlock(&c->lock);
            return r;
        }
    }
    *call = (Call){.c = c, .opcode = opcode, .id = c->next_id++};
    vhsm_buf_reset(&c->out);
    vhsm_buf_begin(&c->out, VHSM_KIND_REQUEST, opcode, call->id);
    return 0;
}

static int call_reply(void *userdata, size_t index, const VhsmHeader *h, size_t off) {
    Call *call = userdata;
    const uint8_t *body = call->c->in.data + off + VHSM_HEADER_SIZE;
    (void)index;
    if (h->id != call->id || vhsm_body_validate(body, h->body_len) < 0)
        return -EPROTO;
    call->body = body;
    call->len = h->body_len;
    call->header = *h;
    return 0;
}

/* Completes the request built in c->out, sends it and waits for its reply. */
/* Key changes refused as busy (vhsmd keeps a worker free for key use while others' changes are
 * written) are sent again after a growing, jittered pause, for up to VHSM_BUSY_RETRY_MS
 * milliseconds in all (default 10000; 0 = no retry). */
static int64_t busy_retry_ms(void) {
    const char *e = getenv("VHSM_BUSY_RETRY_MS");
    char *end;
    long v;
    if (!e || !*e)
        return 10000;
    v = strtol(e, &end, 10);
    return *end || v < 0 ? 10000 : (int64_t)MIN(v, 600000L);
}

static int call_run(Call *call) {
    VhsmClient *c = call->c;
    char msg[VHSM_MAX_STRING + 1];
    int64_t give_up = -1;
    unsigned pause_us = 500, seed = (unsigned)((uintptr_t)call ^ (uintptr_t)now_ms());
    int r = vhsm_buf_end(&c->out);
    if (r < 0) {
        set_error("request too large or out of memory");
        return r;
    }
    for (;;) {
        r = exchange(c, c->out.data, c->out.len, 1, &c->in, call_reply, call);
        if (r < 0)
            return transport_failed(c, r);
        if (call->header.code != VHSM_STATUS_BUSY || !vhsm_opcode_changes_keys(call->opcode))
            break;
        if (give_up < 0)
            give_up = now_ms() + busy_retry_ms();
        if (now_ms() >= give_up)
            break;
        inbuf_wipe(&c->in);
        (void)usleep(pause_us / 2 + (useconds_t)(rand_r(&seed) % (pause_us + 1)));
        pause_us = MIN(pause_us * 2, 50000u);
    }
    r = reply_result(&call->header, call->body, msg, sizeof msg);
    if (r < 0)
        set_error("%s", msg);
    else
        last_error[0] = 0;
    return r;
}

static void call_end(Call *call) {
    vhsm_buf_reset(&call->c->out);
    inbuf_wipe(&call->c->in);
    (void)pthread_mutex_unlock(&call->c->lock);
}

/* Runs a call whose reply carries no output, and ends it. */
static int call_finish(Call *call) {
    int r = call_run(call);
    call_end(call);
    return r;
}

static int copy_out(Call *call, uint16_t tag, uint8_t **ret, size_t *ret_len) {
    const uint8_t *v;
    size_t n;
    uint8_t *p;
    if (vhsm_body_get(call->body, call->len, tag, &v, &n) < 0) {
        set_error("reply from vhsmd lacks a field");
        return -EPROTO;
    }
    p = malloc(n ? n : 1);
    if (!p)
        return -ENOMEM;
    if (n)
        memcpy(p, v, n);
    *ret = p;
    if (ret_len)
        *ret_len = n;
    return 0;
}

static int copy_str(Call *call, uint16_t tag, char **ret) {
    int r = vhsm_body_get_str_alloc(call->body, call->len, tag, VHSM_MAX_BODY, ret);
    if (r < 0 && r != -ENOMEM) {
        set_error("reply from vhsmd lacks a field");
        return -EPROTO;
    }
    return r;
}

int vhsm_call_raw(VhsmClient *c, uint16_t opcode, const uint8_t *body, size_t body_len,
                  uint8_t **ret_body, size_t *ret_body_len) {
    Call call;
    int r = call_begin(&call, c, opcode);
    if (r < 0)
        return r;
    if (body_len > 0) {
        uint8_t *p;
        r = vhsm_buf_reserve(&c->out, body_len);
        if (r >= 0) {
            p = c->out.data + c->out.len;
            memcpy(p, body, body_len);
            c->out.len += body_len;
        }
    }
    if (r >= 0)
        r = call_run(&call);
    if (r >= 0 && ret_body) {
        uint8_t *p = NULL;
        if (call.len > 0) {
            p = malloc(call.len);
            if (!p)
                r = -ENOMEM;
            else
                memcpy(p, call.body, call.len);
        }
        if (r >= 0) {
            *ret_body = p;
            if (ret_body_len)
                *ret_body_len = call.len;
        }
    }
    call_end(&call);
    return r;
}

int vhsm_ping(VhsmClient *c) {
    Call call;
    int r = call_begin(&call, c, VHSM_OP_PING);
    if (r < 0)
        return r;
    return call_finish(&call);
}

static void put_name(VhsmBuf *b, const char *name) {
    if (name)
        vhsm_buf_put_str(b, VHSM_TAG_KEY_NAME, name);
}

static void put_acl(VhsmBuf *b, const VhsmAcl *acl) {
    if (!acl)
        return;
    for (size_t i = 0; i < acl->n_use_uids; i++)
        vhsm_buf_put_u32(b, VHSM_TAG_USE_UID, acl->use_uids[i]);
    for (size_t i = 0; i < acl->n_use_gids; i++)
        vhsm_buf_put_u32(b, VHSM_TAG_USE_GID, acl->use_gids[i]);
    for (size_t i = 0; i < acl->n_use_cgroups; i++)
        vhsm_buf_put_str(b, VHSM_TAG_USE_CGROUP, acl->use_cgroups[i]);
    for (size_t i = 0; i < acl->n_admin_uids; i++)
        vhsm_buf_put_u32(b, VHSM_TAG_ADMIN_UID, acl->admin_uids[i]);
    for (size_t i = 0; i < acl->n_admin_gids; i++)
        vhsm_buf_put_u32(b, VHSM_TAG_ADMIN_GID, acl->admin_gids[i]);
    for (size_t i = 0; i < acl->n_admin_cgroups; i++)
        vhsm_buf_put_str(b, VHSM_TAG_ADMIN_CGROUP, acl->admin_cgroups[i]);
}

static void put_spec(VhsmBuf *b, const VhsmKeySpec *spec) {
    if (!spec)
        return;
    if (spec->type)
        vhsm_buf_put_str(b, VHSM_TAG_KEY_TYPE, spec->type);
    if (spec->policy)
        vhsm_buf_put_str(b, VHSM_TAG_POLICY, spec->policy);
    if (spec->max_age)
        vhsm_buf_put_u64(b, VHSM_TAG_MAX_AGE, spec->max_age);
    if (spec->label)
        vhsm_buf_put_str(b, VHSM_TAG_LABEL, spec->label);
    put_acl(b, spec->acl);
}

/* Runs a request that has only a name and returns nothing. */
static int simple_named(VhsmClient *c, uint16_t opcode, const char *name) {
    Call call;
    int r;
    if (!name)
        return -EINVAL;
    r = call_begin(&call, c, opcode);
    if (r < 0)
        return r;
    put_name(&c->out, name);
    return call_finish(&call);
}

int vhsm_key_create(VhsmClient *c, const char *name, const VhsmKeySpec *spec) {
    Call call;
    int r;
    if (!name || !spec || !spec->type)
        return -EINVAL;
    r = call_begin(&call, c, VHSM_OP_KEY_CREATE);
    if (r < 0)
        return r;
    put_name(&c->out, name);
    put_spec(&c->out, spec);
    return call_finish(&call);
}

static int json_call(VhsmClient *c, uint16_t opcode, const char *name, char **ret) {
    Call call;
    int r;
    if (!ret)
        return -EINVAL;
    r = call_begin(&call, c, opcode);
    if (r < 0)
        return r;
    put_name(&c->out, name);
    r = call_run(&call);
    if (r >= 0)
        r = copy_str(&call, VHSM_TAG_JSON, ret);
    call_end(&call);
    return r;
}

int vhsm_key_list_page(VhsmClient *c, const char *after, uint32_t limit, char **ret_json) {
    Call call;
    int r;
    if (!ret_json)
        return -EINVAL;
    r = call_begin(&call, c, VHSM_OP_KEY_LIST);
    if (r < 0)
        return r;
    if (after && after[0])
        put_name(&c->out, after);
    if (limit)
        vhsm_buf_put_u32(&c->out, VHSM_TAG_LENGTH, limit);
    r = call_run(&call);
    if (r >= 0)
        r = copy_str(&call, VHSM_TAG_JSON, ret_json);
    call_end(&call);
    return r;
}

/* Every page, joined: the daemon bounds each reply, the caller chose to hold the whole list. A
 * cursor must move forward (a daemon that repeats a page cannot loop us forever). */
int vhsm_key_list(VhsmClient *c, char **ret_json) {
    json_t *all = NULL;
    char *cursor = NULL, *out = NULL;
    int r = 0;
    if (!ret_json)
        return -EINVAL;
    all = json_array();
    if (!all)
        return -ENOMEM;
    for (;;) {
        char *s = NULL;
        json_t *page, *keys, *next;
        bool more;
        r = vhsm_key_list_page(c, cursor, 0, &s);
        if (r < 0)
            break;
        page = json_loads(s, 0, NULL);
        free(s);
        keys = json_object_get(page, "keys");
        next = json_object_get(page, "next");
        if (!json_is_array(keys) || !(json_is_null(next) || json_is_string(next)) ||
            (json_is_string(next) && cursor && strcmp(json_string_value(next), cursor) <= 0) ||
            json_array_extend(all, keys) < 0) {
            json_decref(page);
            r = -EPROTO;
            break;
        }
        more = json_is_string(next);
        free(cursor);
        cursor = more ? strdup(json_string_value(next)) : NULL;
        json_decref(page); /* next goes with it */
        if (more && !cursor) {
            r = -ENOMEM;
            break;
        }
        if (!more)
            break;
    }
    free(cursor);
    if (r >= 0) {
        out = json_dumps(all, JSON_COMPACT);
        r = out ? 0 : -ENOMEM;
    }
    json_decref(all);
    if (r >= 0)
        *ret_json = out;
    return r;
}

int vhsm_key_info(VhsmClient *c, const char *name, char **ret_json) {
    if (!name)
        return -EINVAL;
    return json_call(c, VHSM_OP_KEY_INFO, name, ret_json);
}

int vhsm_key_rotate(VhsmClient *c, const char *name, uint32_t *ret_version) {
    Call call;
    uint32_t v = 0;
    int r;
    if (!name)
        return -EINVAL;
    r = call_begin(&call, c, VHSM_OP_KEY_ROTATE);
    if (r < 0)
        return r;
    put_name(&c->out, name);
    r = call_run(&call);
    if (r >= 0 && vhsm_body_get_u32(call.body, call.len, VHSM_TAG_KEY_VERSION, &v) < 0)
        r = -EPROTO;
    call_end(&call);
    if (r >= 0 && ret_version)
        *ret_version = v;
    return r;
}

int vhsm_key_delete(VhsmClient *c, const char *name) {
    return simple_named(c, VHSM_OP_KEY_DELETE, name);
}

int vhsm_key_set_acl(VhsmClient *c, const char *name, const VhsmAcl *acl) {
    Call call;
    int r;
    if (!name || !acl)
        return -EINVAL;
    r = call_begin(&call, c, VHSM_OP_KEY_SET_ACL);
    if (r < 0)
        return r;
    put_name(&c->out, name);
    put_acl(&c->out, acl);
    return call_finish(&call);
}

int vhsm_key_set_min_version(VhsmClient *c, const char *name, uint32_t min_version) {
    Call call;
    int r;
    if (!name)
        return -EINVAL;
    r = call_begin(&call, c, VHSM_OP_KEY_SET_MIN_VERSION);
    if (r < 0)
        return r;
    put_name(&c->out, name);
    vhsm_buf_put_u32(&c->out, VHSM_TAG_MIN_VERSION, min_version);
    return call_finish(&call);
}

/* The common shape of data operations: name, algorithm, flags, version, data, aad, extra. */
typedef struct OpArgs {
    uint16_t opcode;
    const char *name;
    const char *algorithm;
    unsigned flags;
    uint32_t version;
    const void *data;
    size_t len;
    const void *aad;
    size_t aad_len;
    uint16_t extra_tag; /* 0 or a tag for extra (signature, MAC tag) */
    const void *extra;
    size_t extra_len;
    uint16_t out_tag; /* 0: no output */
} OpArgs;

static bool op_args_valid(const OpArgs *a) {
    return a->name && (a->data || a->len == 0) && (a->aad || a->aad_len == 0) &&
           (a->extra || a->extra_len == 0);
}

/* The request body of a data operation (shared by single calls and batches). */
static void put_op(VhsmBuf *b, const OpArgs *a) {
    put_name(b, a->name);
    if (a->algorithm)
        vhsm_buf_put_str(b, VHSM_TAG_ALGORITHM, a->algorithm);
    if (a->flags)
        vhsm_buf_put_u32(b, VHSM_TAG_FLAGS, a->flags);
    if (a->version)
        vhsm_buf_put_u32(b, VHSM_TAG_KEY_VERSION, a->version);
    vhsm_buf_put(b, VHSM_TAG_DATA, a->data, a->len);
    if (a->aad)
        vhsm_buf_put(b, VHSM_TAG_AAD, a->aad, a->aad_len);
    if (a->extra_tag)
        vhsm_buf_put(b, a->extra_tag, a->extra, a->extra_len);
}

static int data_op(VhsmClient *c, const OpArgs *a, uint8_t **ret, size_t *ret_len) {
    Call call;
    int r;
    if (!op_args_valid(a) || (a->out_tag && !ret))
        return -EINVAL;
    r = call_begin(&call, c, a->opcode);
    if (r < 0)
        return r;
    put_op(&c->out, a);
    r = call_run(&call);
    if (r >= 0 && a->out_tag)
        r = copy_out(&call, a->out_tag, ret, ret_len);
    call_end(&call);
    return r;
}

/* The arguments of each data operation, shared by the single call and its batch variant. */
static OpArgs encrypt_args(const char *name, const char *algorithm, unsigned flags, const void *pt,
                           size_t pt_len, const void *aad, size_t aad_len) {
    return (OpArgs){.opcode = VHSM_OP_ENCRYPT,
                    .name = name,
                    .algorithm = algorithm,
                    .flags = flags,
                    .data = pt,
                    .len = pt_len,
                    .aad = aad,
                    .aad_len = aad_len,
                    .out_tag = VHSM_TAG_OUTPUT};
}

static OpArgs decrypt_args(const char *name, const char *algorithm, unsigned flags,
                           uint32_t version, const void *ct, size_t ct_len, const void *aad,
                           size_t aad_len) {
    OpArgs a = encrypt_args(name, algorithm, flags, ct, ct_len, aad, aad_len);
    a.opcode = VHSM_OP_DECRYPT;
    a.version = version;
    return a;
}

static OpArgs sign_args(uint16_t opcode, const char *name, const char *algorithm, unsigned flags,
                        const void *data, size_t len) {
    return (OpArgs){.opcode = opcode,
                    .name = name,
                    .algorithm = algorithm,
                    .flags = flags,
                    .data = data,
                    .len = len,
                    .out_tag = VHSM_TAG_SIGNATURE};
}

static OpArgs verify_args(uint16_t opcode, const char *name, const char *algorithm, unsigned flags,
                          uint32_t version, const void *data, size_t len, const void *sig,
                          size_t sig_len) {
    OpArgs a = sign_args(opcode, name, algorithm, flags, data, len);
    a.version = version;
    a.extra_tag = VHSM_TAG_SIGNATURE;
    a.extra = sig;
    a.extra_len = sig_len;
    a.out_tag = 0;
    return a;
}

static OpArgs wrap_args(uint16_t opcode, const char *name, const char *algorithm, unsigned flags,
                        uint32_t version, const void *data, size_t len) {
    OpArgs a = encrypt_args(name, algorithm, flags, data, len, NULL, 0);
    a.opcode = opcode;
    a.version = version;
    return a;
}

int vhsm_encrypt(VhsmClient *c, const char *name, const char *algorithm, unsigned flags,
                 const void *pt, size_t pt_len, const void *aad, size_t aad_len, uint8_t **ret_ct,
                 size_t *ret_ct_len) {
    OpArgs a = encrypt_args(name, algorithm, flags, pt, pt_len, aad, aad_len);
    return data_op(c, &a, ret_ct, ret_ct_len);
}

int vhsm_decrypt(VhsmClient *c, const char *name, const char *algorithm, unsigned flags,
                 uint32_t version, const void *ct, size_t ct_len, const void *aad, size_t aad_len,
                 uint8_t **ret_pt, size_t *ret_pt_len) {
    OpArgs a = decrypt_args(name, algorithm, flags, version, ct, ct_len, aad, aad_len);
    return data_op(c, &a, ret_pt, ret_pt_len);
}

int vhsm_sign(VhsmClient *c, const char *name, const char *algorithm, unsigned flags,
              const void *data, size_t len, uint8_t **ret_sig, size_t *ret_sig_len) {
    OpArgs a = sign_args(VHSM_OP_SIGN, name, algorithm, flags, data, len);
    return data_op(c, &a, ret_sig, ret_sig_len);
}

int vhsm_verify(VhsmClient *c, const char *name, const char *algorithm, unsigned flags,
                uint32_t version, const void *data, size_t len, const void *sig, size_t sig_len) {
    OpArgs a =
        verify_args(VHSM_OP_VERIFY, name, algorithm, flags, version, data, len, sig, sig_len);
    return data_op(c, &a, NULL, NULL);
}

int vhsm_mac(VhsmClient *c, const char *name, const void *data, size_t len, uint8_t **ret_tag,
             size_t *ret_tag_len) {
    OpArgs a = sign_args(VHSM_OP_MAC, name, NULL, 0, data, len);
    return data_op(c, &a, ret_tag, ret_tag_len);
}

int vhsm_mac_verify(VhsmClient *c, const char *name, const void *data, size_t len, const void *tag,
                    size_t tag_len) {
    OpArgs a = verify_args(VHSM_OP_MAC_VERIFY, name, NULL, 0, 0, data, len, tag, tag_len);
    return data_op(c, &a, NULL, NULL);
}

int vhsm_wrap(VhsmClient *c, const char *name, const char *algorithm, unsigned flags,
              const void *data, size_t len, uint8_t **ret, size_t *ret_len) {
    OpArgs a = wrap_args(VHSM_OP_WRAP, name, algorithm, flags, 0, data, len);
    return data_op(c, &a, ret, ret_len);
}

int vhsm_unwrap(VhsmClient *c, const char *name, const char *algorithm, unsigned flags,
                uint32_t version, const void *data, size_t len, uint8_t **ret, size_t *ret_len) {
    OpArgs a = wrap_args(VHSM_OP_UNWRAP, name, algorithm, flags, version, data, len);
    return data_op(c, &a, ret, ret_len);
}

int vhsm_random(VhsmClient *c, void *out, size_t n) {
    Call call;
    const uint8_t *v;
    size_t vn;
    int r;
    if (!out || n == 0 || n > VHSM_MAX_RANDOM)
        return -EINVAL;
    r = call_begin(&call, c, VHSM_OP_RANDOM);
    if (r < 0)
        return r;
    vhsm_buf_put_u32(&c->out, VHSM_TAG_LENGTH, (uint32_t)n);
    r = call_run(&call);
    if (r >= 0) {
        if (vhsm_body_get(call.body, call.len, VHSM_TAG_OUTPUT, &v, &vn) < 0 || vn != n) {
            set_error("random reply from vhsmd has the wrong size");
            r = -EPROTO;
        } else
            memcpy(out, v, n);
    }
    call_end(&call);
    return r;
}

int vhsm_pubkey(VhsmClient *c, const char *name, const char *format, uint32_t version, char **ret) {
    Call call;
    int r;
    if (!name || !ret)
        return -EINVAL;
    r = call_begin(&call, c, VHSM_OP_PUBKEY);
    if (r < 0)
        return r;
    put_name(&c->out, name);
    vhsm_buf_put_str(&c->out, VHSM_TAG_FORMAT, format ? format : "pem");
    if (version)
        vhsm_buf_put_u32(&c->out, VHSM_TAG_KEY_VERSION, version);
    r = call_run(&call);
    if (r >= 0)
        r = copy_str(&call, VHSM_TAG_OUTPUT, ret);
    call_end(&call);
    return r;
}

int vhsm_ecdh_derive(VhsmClient *c, const char *name, const void *peer_pub, size_t peer_pub_len,
                     const void *info, size_t info_len, const char *new_name,
                     const VhsmKeySpec *spec) {
    Call call;
    int r;
    if (!name || !peer_pub || !new_name || (!info && info_len > 0))
        return -EINVAL;
    r = call_begin(&call, c, VHSM_OP_ECDH_DERIVE);
    if (r < 0)
        return r;
    put_name(&c->out, name);
    vhsm_buf_put(&c->out, VHSM_TAG_PEER_KEY, peer_pub, peer_pub_len);
    if (info)
        vhsm_buf_put(&c->out, VHSM_TAG_INFO, info, info_len);
    vhsm_buf_put_str(&c->out, VHSM_TAG_NEW_KEY_NAME, new_name);
    if (spec) {
        VhsmKeySpec s = *spec;
        s.type = NULL; /* always AES-256 */
        put_spec(&c->out, &s);
    }
    return call_finish(&call);
}

int vhsm_transfer_key_create(VhsmClient *c, uint32_t lifetime, char **ret_jwk) {
    Call call;
    int r;
    if (!ret_jwk)
        return -EINVAL;
    r = call_begin(&call, c, VHSM_OP_TRANSFER_KEY_CREATE);
    if (r < 0)
        return r;
    if (lifetime)
        vhsm_buf_put_u32(&c->out, VHSM_TAG_LIFETIME, lifetime);
    r = call_run(&call);
    if (r >= 0)
        r = copy_str(&call, VHSM_TAG_JSON, ret_jwk);
    call_end(&call);
    return r;
}

int vhsm_import_release(VhsmClient *c, const char *release, const char *token, char **ret_json) {
    Call call;
    int r;
    if (!release || strlen(release) > VHSM_MAX_RELEASE || (token && strlen(token) > VHSM_MAX_TOKEN))
        return -EINVAL;
    r = call_begin(&call, c, VHSM_OP_IMPORT_RELEASE);
    if (r < 0)
        return r;
    vhsm_buf_put_str(&c->out, VHSM_TAG_RELEASE, release);
    if (token)
        vhsm_buf_put_str(&c->out, VHSM_TAG_TOKEN, token);
    r = call_run(&call);
    if (r >= 0 && ret_json)
        r = copy_str(&call, VHSM_TAG_JSON, ret_json);
    call_end(&call);
    return r;
}

int vhsm_attestation_status(VhsmClient *c, char **ret_json) {
    return json_call(c, VHSM_OP_ATTESTATION_STATUS, NULL, ret_json);
}

int vhsm_attestation_set_token(VhsmClient *c, const char *token) {
    Call call;
    int r;
    if (!token || strlen(token) > VHSM_MAX_TOKEN)
        return -EINVAL;
    r = call_begin(&call, c, VHSM_OP_ATTESTATION_SET);
    if (r < 0)
        return r;
    vhsm_buf_put_str(&c->out, VHSM_TAG_TOKEN, token);
    return call_finish(&call);
}

/* Parses AGENT_WAIT's reply: {} (idle, 0) or {"id","key","reason","parked"} (1). */
static int agent_job_parse(const char *text, VhsmAgentJob *ret) {
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, NULL), *id, *key, *reason, *parked;
    VhsmAgentJob job = {0};
    int r = -EPROTO;
    if (!json_is_object(j))
        goto out;
    if (json_object_size(j) == 0) {
        r = 0;
        goto out;
    }
    id = json_object_get(j, "id");
    key = json_object_get(j, "key");
    reason = json_object_get(j, "reason");
    parked = json_object_get(j, "parked");
    if (!json_is_integer(id) || json_integer_value(id) <= 0 || !json_is_string(key) ||
        json_string_length(key) >= sizeof job.key || !json_is_string(reason) ||
        json_string_length(reason) >= sizeof job.reason ||
        (parked && (!json_is_integer(parked) || json_integer_value(parked) < 0 ||
                    json_integer_value(parked) > UINT32_MAX)))
        goto out;
    job.id = (uint64_t)json_integer_value(id);
    memcpy(job.key, json_string_value(key), json_string_length(key) + 1);
    memcpy(job.reason, json_string_value(reason), json_string_length(reason) + 1);
    job.parked = parked ? (uint32_t)json_integer_value(parked) : 0;
    *ret = job;
    r = 1;
out:
    if (r == -EPROTO)
        set_error("malformed agent job from vhsmd");
    json_decref(j);
    return r;
}

int vhsm_agent_wait(VhsmClient *c, const char *const *patterns, size_t n_patterns, uint32_t wait_ms,
                    VhsmAgentJob *ret_job) {
    unsigned saved;
    char *text = NULL;
    Call call;
    int r;
    if (!ret_job || (n_patterns > 0 && !patterns) || n_patterns > VHSM_MAX_PATTERNS ||
        wait_ms > VHSM_AGENT_WAIT_MAX_MS)
        return -EINVAL;
    for (size_t i = 0; i < n_patterns; i++)
        if (!patterns[i] || !*patterns[i] || strlen(patterns[i]) > VHSM_MAX_PATTERN)
            return -EINVAL;
    r = call_begin(&call, c, VHSM_OP_AGENT_WAIT);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n_patterns; i++)
        vhsm_buf_put_str(&c->out, VHSM_TAG_PATTERN, patterns[i]);
    if (wait_ms)
        vhsm_buf_put_u32(&c->out, VHSM_TAG_WAIT_MS, wait_ms);
    /* The daemon answers at wait_ms at the latest: wait that long, plus a margin. */
    saved = c->timeout_ms;
    if (saved) {
        unsigned t = (wait_ms ? wait_ms : VHSM_AGENT_WAIT_DEFAULT_MS) + 5000u;
        r = apply_timeout(c->fd, MAX(t, saved));
        if (r >= 0)
            c->timeout_ms = MAX(t, saved);
    }
    if (r >= 0)
        r = call_run(&call);
    if (saved && c->timeout_ms != saved && apply_timeout(c->fd, saved) >= 0)
        c->timeout_ms = saved;
    if (r >= 0)
        r = copy_str(&call, VHSM_TAG_JSON, &text);
    call_end(&call);
    if (r >= 0)
        r = agent_job_parse(text, ret_job);
    free(text);
    return r;
}

int vhsm_agent_done(VhsmClient *c, uint64_t id, int status, const char *message) {
    Call call;
    int r;
    if (id == 0 || status > 0 || (message && strlen(message) > VHSM_MAX_AGENT_MESSAGE))
        return -EINVAL;
    r = call_begin(&call, c, VHSM_OP_AGENT_DONE);
    if (r < 0)
        return r;
    vhsm_buf_put_u64(&c->out, VHSM_TAG_JOB_ID, id);
    if (status < 0)
        vhsm_buf_put_u32(&c->out, VHSM_TAG_STATUS_CODE, (uint32_t)vhsm_status_from_errno(status));
    if (message)
        vhsm_buf_put_str(&c->out, VHSM_TAG_MESSAGE, message);
    return call_finish(&call);
}

/* ---- pipelined batches ---- */

typedef struct BatchOp {
    size_t frame;     /* offset of the request frame in the batch's output buffer */
    uint32_t id;      /* request id, assigned when the batch runs */
    uint16_t out_tag; /* 0: the operation returns no data */
    int result;       /* 0 or a negative errno, after a run */
    size_t out_off;   /* output value in the reply buffer */
    size_t out_len;
    char *message; /* the daemon's message for a failure, or NULL */
} BatchOp;

/* QUEUING -> (send) IN_FLIGHT -> (all replies read, by whichever call read them) ANSWERED ->
 * (recv) DONE; a transport error turns every IN_FLIGHT batch of the connection into FAILED.
 * Reset returns to QUEUING. */
typedef enum BatchState {
    BATCH_QUEUING,
    BATCH_IN_FLIGHT,
    BATCH_ANSWERED,
    BATCH_DONE,
    BATCH_FAILED,
} BatchState;

struct VhsmBatch {
    VhsmClient *c;
    VhsmBuf out; /* the queued request frames */
    BatchOp *ops;
    size_t n_ops, cap_ops;
    BatchState state;    /* changes from IN_FLIGHT only under the connection's lock */
    int error;           /* FAILED: the transport error */
    size_t got;          /* replies received */
    size_t parsed;       /* bytes of in taken by those replies */
    VhsmBatch *next;     /* the connection's in-flight queue */
    InBuf in;            /* the replies */
    bool secret_replies; /* an operation returns secret data: wipe the replies when done */
};

int vhsm_batch_new(VhsmClient *c, VhsmBatch **ret) {
    VhsmBatch *b;
    if (!c || !ret)
        return -EINVAL;
    b = calloc(1, sizeof *b);
    if (!b)
        return -ENOMEM;
    b->c = c;
    b->out = VHSM_BUF_INIT;
    *ret = b;
    return 0;
}

/* Fails every batch in flight on c with the transport error r and breaks the connection (the
 * byte stream is no longer aligned on frames). Called with the lock held. */
static int flight_fail(VhsmClient *c, int r) {
    VhsmBatch *b = c->flight_head, *next;
    for (; b; b = next) {
        next = b->next;
        b->next = NULL;
        b->state = BATCH_FAILED;
        b->error = r;
        inbuf_wipe(&b->in); /* no partial results */
    }
    c->flight_head = c->flight_tail = NULL;
    return transport_failed(c, r);
}

void vhsm_batch_reset(VhsmBatch *b) {
    if (!b)
        return;
    (void)pthread_mutex_lock(&b->c->lock);
    if (b->state == BATCH_IN_FLIGHT) {
        /* Its replies would arrive for a batch that is gone: abandon the stream. */
        (void)flight_fail(b->c, -ECONNABORTED);
        set_error("batch reset while in flight: connection to vhsmd abandoned");
    }
    (void)pthread_mutex_unlock(&b->c->lock);
    for (size_t i = 0; i < b->n_ops; i++)
        free(b->ops[i].message);
    b->n_ops = 0;
    b->state = BATCH_QUEUING;
    b->error = 0;
    b->got = b->parsed = 0;
    vhsm_buf_reset(&b->out);
    if (b->secret_replies)
        inbuf_wipe(&b->in);
    else
        b->in.len = 0;
    b->secret_replies = false;
}

VhsmBatch *vhsm_batch_free(VhsmBatch *b) {
    if (!b)
        return NULL;
    vhsm_batch_reset(b);
    vhsm_buf_done(&b->out);
    inbuf_done(&b->in);
    free(b->ops);
    free(b);
    return NULL;
}

size_t vhsm_batch_size(const VhsmBatch *b) {
    return b ? b->n_ops : 0;
}

/* Starts a queued request frame; the id is written when the batch runs. */
static int batch_begin(VhsmBatch *b, uint16_t opcode) {
    if (!b || b->state != BATCH_QUEUING)
        return -EINVAL;
    if (b->n_ops >= VHSM_BATCH_MAX)
        return -E2BIG;
    if (b->n_ops == b->cap_ops) {
        size_t cap = b->cap_ops ? b->cap_ops * 2 : 16;
        BatchOp *p = reallocarray(b->ops, cap, sizeof *p);
        if (!p)
            return -ENOMEM;
        b->ops = p;
        b->cap_ops = cap;
    }
    b->ops[b->n_ops] = (BatchOp){.frame = b->out.len};
    /* Replies of decrypt, unwrap, random (and of raw requests, which could be anything) carry
     * secrets; ciphertexts, signatures and MACs do not. Requests are always wiped. */
    if (opcode != VHSM_OP_ENCRYPT && opcode != VHSM_OP_SIGN && opcode != VHSM_OP_VERIFY &&
        opcode != VHSM_OP_MAC && opcode != VHSM_OP_MAC_VERIFY && opcode != VHSM_OP_WRAP)
        b->secret_replies = true;
    vhsm_buf_begin(&b->out, VHSM_KIND_REQUEST, opcode, 0);
    return 0;
}

/* Completes the frame begun by batch_begin(). Returns its index, or the build error (the partial
 * frame is dropped: nothing is queued). */
static int batch_end(VhsmBatch *b, uint16_t out_tag) {
    int r = vhsm_buf_end(&b->out);
    if (r < 0)
        return r;
    b->ops[b->n_ops].out_tag = out_tag;
    return (int)b->n_ops++;
}

static int batch_op(VhsmBatch *b, const OpArgs *a) {
    int r;
    if (!op_args_valid(a))
        return -EINVAL;
    r = batch_begin(b, a->opcode);
    if (r < 0)
        return r;
    put_op(&b->out, a);
    return batch_end(b, a->out_tag);
}

int vhsm_batch_raw(VhsmBatch *b, uint16_t opcode, const uint8_t *body, size_t body_len) {
    uint8_t *p;
    int r;
    if (!body && body_len > 0)
        return -EINVAL;
    if (body_len > VHSM_MAX_BODY)
        return -EMSGSIZE;
    r = batch_begin(b, opcode);
    if (r < 0)
        return r;
    r = vhsm_buf_reserve(&b->out, body_len);
    if (r < 0) {
        vhsm_buf_abort(&b->out);
        return r;
    }
    p = b->out.data + b->out.len;
    if (body_len > 0)
        memcpy(p, body, body_len);
    b->out.len += body_len;
    return batch_end(b, 0);
}

int vhsm_batch_encrypt(VhsmBatch *b, const char *name, const char *algorithm, unsigned flags,
                       const void *pt, size_t pt_len, const void *aad, size_t aad_len) {
    OpArgs a = encrypt_args(name, algorithm, flags, pt, pt_len, aad, aad_len);
    return batch_op(b, &a);
}

int vhsm_batch_decrypt(VhsmBatch *b, const char *name, const char *algorithm, unsigned flags,
                       uint32_t version, const void *ct, size_t ct_len, const void *aad,
                       size_t aad_len) {
    OpArgs a = decrypt_args(name, algorithm, flags, version, ct, ct_len, aad, aad_len);
    return batch_op(b, &a);
}

int vhsm_batch_sign(VhsmBatch *b, const char *name, const char *algorithm, unsigned flags,
                    const void *data, size_t len) {
    OpArgs a = sign_args(VHSM_OP_SIGN, name, algorithm, flags, data, len);
    return batch_op(b, &a);
}

int vhsm_batch_verify(VhsmBatch *b, const char *name, const char *algorithm, unsigned flags,
                      uint32_t version, const void *data, size_t len, const void *sig,
                      size_t sig_len) {
    OpArgs a =
        verify_args(VHSM_OP_VERIFY, name, algorithm, flags, version, data, len, sig, sig_len);
    return batch_op(b, &a);
}

int vhsm_batch_mac(VhsmBatch *b, const char *name, const void *data, size_t len) {
    OpArgs a = sign_args(VHSM_OP_MAC, name, NULL, 0, data, len);
    return batch_op(b, &a);
}

int vhsm_batch_mac_verify(VhsmBatch *b, const char *name, const void *data, size_t len,
                          const void *tag, size_t tag_len) {
    OpArgs a = verify_args(VHSM_OP_MAC_VERIFY, name, NULL, 0, 0, data, len, tag, tag_len);
    return batch_op(b, &a);
}

int vhsm_batch_wrap(VhsmBatch *b, const char *name, const char *algorithm, unsigned flags,
                    const void *data, size_t len) {
    OpArgs a = wrap_args(VHSM_OP_WRAP, name, algorithm, flags, 0, data, len);
    return batch_op(b, &a);
}

int vhsm_batch_unwrap(VhsmBatch *b, const char *name, const char *algorithm, unsigned flags,
                      uint32_t version, const void *data, size_t len) {
    OpArgs a = wrap_args(VHSM_OP_UNWRAP, name, algorithm, flags, version, data, len);
    return batch_op(b, &a);
}

/* Records the reply to operation index (replies arrive in request order). A reply that does not
 * belong to the request, or whose body is malformed, breaks the whole stream (-EPROTO); a reply
 * that is well-formed but lacks the expected output fails only its own operation. */
static int batch_reply(void *userdata, size_t index, const VhsmHeader *h, size_t off) {
    VhsmBatch *b = userdata;
    BatchOp *op = &b->ops[index];
    const uint8_t *body = b->in.data + off + VHSM_HEADER_SIZE, *v;
    char msg[VHSM_MAX_STRING + 1];
    size_t n;

    if (h->id != op->id || vhsm_body_validate(body, h->body_len) < 0)
        return -EPROTO;
    op->result = reply_result(h, body, msg, sizeof msg);
    if (op->result < 0) {
        op->message = strdup(msg);
        return op->message ? 0 : -ENOMEM;
    }
    if (op->out_tag == 0)
        return 0;
    if (vhsm_body_get(body, h->body_len, op->out_tag, &v, &n) < 0) {
        op->result = -EPROTO;
        op->message = strdup("reply from vhsmd lacks a field");
        return op->message ? 0 : -ENOMEM;
    }
    op->out_off = (size_t)(v - b->in.data);
    op->out_len = n;
    return 0;
}

/* Hands over the complete replies in the oldest in-flight batch's buffer, in order. A batch whose
 * replies are all in leaves the queue as ANSWERED; bytes past its last reply belong to the next
 * batch and move to its buffer. Returns 0, -EPROTO (a malformed frame, or bytes nobody asked
 * for) or -ENOMEM. */
static int flight_parse(VhsmClient *c) {
    VhsmBatch *b;
    int r;

    while ((b = c->flight_head)) {
        VhsmBatch *next = b->next;
        size_t extra;

        while (b->got < b->n_ops && b->in.len - b->parsed >= VHSM_HEADER_SIZE) {
            VhsmHeader h;
            if (vhsm_header_decode(b->in.data + b->parsed, &h) < 0 || h.kind != VHSM_KIND_RESPONSE)
                return -EPROTO;
            if (b->in.len - b->parsed - VHSM_HEADER_SIZE < h.body_len)
                break;
            r = batch_reply(b, b->got, &h, b->parsed);
            if (r < 0)
                return r;
            b->parsed += VHSM_HEADER_SIZE + h.body_len;
            b->got++;
        }
        if (b->got < b->n_ops)
            return 0;
        extra = b->in.len - b->parsed;
        if (extra > 0) {
            if (!next)
                return -EPROTO;
            r = inbuf_room(&next->in, extra);
            if (r < 0)
                return r;
            memcpy(next->in.data + next->in.len, b->in.data + b->parsed, extra);
            next->in.len += extra;
            explicit_bzero(b->in.data + b->parsed, extra);
            b->in.len = b->parsed;
        }
        b->state = BATCH_ANSWERED;
        b->next = NULL;
        c->flight_head = next;
        if (!next)
            c->flight_tail = NULL;
    }
    return 0;
}

/* Reads what the socket holds into the oldest in-flight batch and parses it. wait: block until
 * bytes arrive (bounded by SO_RCVTIMEO), busy-polling first until spin_until (now_us() clock;
 * 0 = no polling). Returns 1 if bytes arrived, 0 if none were ready (!wait), or a transport
 * errno. */
static int flight_read(VhsmClient *c, bool wait, int64_t spin_until) {
    VhsmBatch *b = c->flight_head;
    ssize_t n;
    int r;

    if (!b)
        return -EPROTO; /* a batch answered before it was completely sent */
    r = inbuf_room(&b->in, CLIENT_READ_CHUNK / 4);
    if (r < 0)
        return r;
    for (;;) {
        bool dontwait = !wait || (spin_until > 0 && now_us() < spin_until);
        n = recv(c->fd, b->in.data + b->in.len, b->in.cap - b->in.len, dontwait ? MSG_DONTWAIT : 0);
        if (n > 0)
            break;
        if (n == 0)
            return b->in.len == b->parsed ? -ECONNRESET : -EPROTO;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return negative_errno();
        if (!wait)
            return 0;
        if (!dontwait)
            return -ETIMEDOUT; /* SO_RCVTIMEO expired */
        sched_yield();
    }
    b->in.len += (size_t)n;
    r = flight_parse(c);
    return r < 0 ? r : 1;
}

/* Sends out[0..out_len) (frames of the newest batch in flight). While the socket is full, replies
 * that are ready are read (into the batches they belong to), so the daemon, which stops reading a
 * connection whose unread replies pass its output mark, never waits for us while we wait for it.
 * Then, if until is set, reads until until is answered (and every batch before it). Returns 0 or
 * a transport errno; the caller fails the flight on error. Called with the lock held. */
static int flight_pump(VhsmClient *c, const uint8_t *out, size_t out_len, const VhsmBatch *until) {
    int64_t deadline = c->timeout_ms ? now_ms() + c->timeout_ms : 0;
    int64_t spin = spin_env(); /* batches: only the fixed window of $VHSM_SPIN_US */
    size_t sent = 0;
    int r;

    while (sent < out_len) {
        ssize_t n = send(c->fd, out + sent, out_len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0) {
            sent += (size_t)n;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return negative_errno();
        r = flight_read(c, false, 0);
        if (r == 0)
            r = wait_fd(c->fd, POLLIN | POLLOUT, deadline);
        else if (r > 0 && deadline > 0 && now_ms() > deadline)
            r = -ETIMEDOUT;
        if (r < 0)
            return r;
    }
    if (!until)
        return 0;
    spin = spin > 0 ? now_us() + spin : 0;
    while (until->state == BATCH_IN_FLIGHT) {
        if (deadline > 0 && now_ms() > deadline)
            return -ETIMEDOUT;
        r = flight_read(c, true, spin);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Reads the replies of every batch in flight (before a single call). Lock held. */
static int flight_drain(VhsmClient *c) {
    int r = flight_pump(c, NULL, 0, c->flight_tail);
    return r < 0 ? flight_fail(c, r) : 0;
}

int vhsm_batch_send(VhsmBatch *b) {
    VhsmClient *c;
    int r;

    if (!b || b->state != BATCH_QUEUING)
        return -EINVAL;
    c = b->c;
    (void)pthread_mutex_lock(&c->lock);
    if (c->broken) {
        (void)pthread_mutex_unlock(&c->lock);
        set_error("connection to vhsmd is broken");
        return -ENOTCONN;
    }
    inbuf_wipe(&b->in);
    b->got = b->parsed = 0;
    if (b->n_ops == 0) {
        b->state = BATCH_ANSWERED;
        (void)pthread_mutex_unlock(&c->lock);
        return 0;
    }
    for (size_t i = 0; i < b->n_ops; i++) {
        uint8_t *idp = b->out.data + b->ops[i].frame + 8;
        uint32_t id = c->next_id++;
        b->ops[i].id = id;
        idp[0] = (uint8_t)(id >> 24);
        idp[1] = (uint8_t)(id >> 16);
        idp[2] = (uint8_t)(id >> 8);
        idp[3] = (uint8_t)id;
    }
    b->state = BATCH_IN_FLIGHT;
    b->next = NULL;
    if (c->flight_tail)
        c->flight_tail->next = b;
    else
        c->flight_head = b;
    c->flight_tail = b;
    r = flight_pump(c, b->out.data, b->out.len, NULL);
    if (r < 0)
        (void)flight_fail(c, r);
    (void)pthread_mutex_unlock(&c->lock);
    return r < 0 ? r : 0;
}

int vhsm_batch_recv(VhsmBatch *b) {
    VhsmClient *c;
    int r = 0;

    if (!b)
        return -EINVAL;
    c = b->c;
    (void)pthread_mutex_lock(&c->lock);
    if (b->state == BATCH_IN_FLIGHT) {
        r = flight_pump(c, NULL, 0, b);
        if (r < 0)
            (void)flight_fail(c, r);
    } else if (b->state == BATCH_FAILED)
        r = b->error;
    else if (b->state != BATCH_ANSWERED)
        r = -EINVAL;
    (void)pthread_mutex_unlock(&c->lock);
    if (r < 0)
        return r;
    /* The requests may hold plaintext: wipe them now that they are answered. */
    vhsm_buf_reset(&b->out);
    b->state = BATCH_DONE;
    last_error[0] = 0;
    for (size_t i = 0; i < b->n_ops; i++)
        if (b->ops[i].result < 0) {
            set_error("%s", b->ops[i].message ? b->ops[i].message : "");
            break;
        }
    return 0;
}

int vhsm_batch_run(VhsmBatch *b) {
    int r = vhsm_batch_send(b);
    return r < 0 ? r : vhsm_batch_recv(b);
}

int vhsm_batch_result(const VhsmBatch *b, size_t i, const uint8_t **ret_out, size_t *ret_len) {
    const BatchOp *op;
    if (!b || b->state != BATCH_DONE || i >= b->n_ops)
        return -EINVAL;
    op = &b->ops[i];
    if (op->result < 0)
        return op->result;
    if (ret_out)
        *ret_out = op->out_tag ? b->in.data + op->out_off : NULL;
    if (ret_len)
        *ret_len = op->out_tag ? op->out_len : 0;
    return 0;
}

const char *vhsm_batch_message(const VhsmBatch *b, size_t i) {
    if (!b || b->state != BATCH_DONE || i >= b->n_ops || !b->ops[i].message)
        return "";
    return b->ops[i].message;
}

/* ---- revision 2: tokens and PINs ---- */

int vhsm_revision(VhsmClient *c, uint32_t *ret) {
    Call call;
    uint32_t rev = 1;
    int r;
    if (!ret)
        return -EINVAL;
    r = call_begin(&call, c, VHSM_OP_PING);
    if (r < 0)
        return r;
    r = call_run(&call);
    if (r >= 0) {
        int g = vhsm_body_get_u32(call.body, call.len, VHSM_TAG_REVISION, &rev);
        if (g == -ENOENT)
            rev = 1; /* a daemon before revision 2 */
        else if (g < 0) {
            set_error("malformed revision in vhsmd's reply");
            r = -EPROTO;
        }
    }
    call_end(&call);
    if (r >= 0)
        *ret = rev;
    return r;
}

static int pin_arg_check(const void *pin, size_t len) {
    if (!pin)
        return -EINVAL;
    if (len < VHSM_PIN_MIN || len > VHSM_PIN_MAX)
        return -ERANGE;
    return 0;
}

int vhsm_token_info(VhsmClient *c, VhsmTokenInfo *ret) {
    Call call;
    VhsmTokenInfo ti = {0};
    const uint8_t *label;
    size_t label_len;
    int r;
    if (!ret)
        return -EINVAL;
    r = call_begin(&call, c, VHSM_OP_TOKEN_INFO);
    if (r < 0)
        return r;
    r = call_run(&call);
    if (r >= 0) {
        if (vhsm_body_get_u32(call.body, call.len, VHSM_TAG_UID, &ti.uid) < 0 ||
            vhsm_body_get(call.body, call.len, VHSM_TAG_TOKEN_LABEL, &label, &label_len) < 0 ||
            label_len > VHSM_TOKEN_LABEL_MAX ||
            vhsm_body_get_str(call.body, call.len, VHSM_TAG_SERIAL, 16, ti.serial,
                              sizeof ti.serial) < 0 ||
            vhsm_body_get_u32(call.body, call.len, VHSM_TAG_TOKEN_FLAGS, &ti.flags) < 0 ||
            vhsm_body_get_u32(call.body, call.len, VHSM_TAG_USER_FAILURES, &ti.user_failures) < 0 ||
            vhsm_body_get_u32(call.body, call.len, VHSM_TAG_SO_FAILURES, &ti.so_failures) < 0 ||
            vhsm_body_get_u32(call.body, call.len, VHSM_TAG_MAX_TRIES, &ti.max_tries) < 0 ||
            vhsm_body_get_u32(call.body, call.len, VHSM_TAG_USER_TYPE, &ti.login) < 0) {
            set_error("malformed token info from vhsmd");
            r = -EPROTO;
        } else {
            memcpy(ti.label, label, label_len);
            ti.label_len = label_len;
            ti.pin_min = VHSM_PIN_MIN;
            ti.pin_max = VHSM_PIN_MAX;
        }
    }
    call_end(&call);
    if (r >= 0)
        *ret = ti;
    return r;
}

int vhsm_token_init(VhsmClient *c, const void *so_pin, size_t so_pin_len, const void *label,
                    size_t label_len) {
    Call call;
    int r;
    if ((r = pin_arg_check(so_pin, so_pin_len)) < 0)
        return r;
    if (label_len > VHSM_TOKEN_LABEL_MAX || (label_len > 0 && !label))
        return -EINVAL;
    r = call_begin(&call, c, VHSM_OP_TOKEN_INIT);
    if (r < 0)
        return r;
    vhsm_buf_put(&c->out, VHSM_TAG_PIN, so_pin, so_pin_len);
    vhsm_buf_put(&c->out, VHSM_TAG_TOKEN_LABEL, label, label_len);
    return call_finish(&call);
}

int vhsm_login(VhsmClient *c, uint32_t user, const void *pin, size_t pin_len,
               uint8_t ret_ticket[VHSM_TICKET_SIZE]) {
    Call call;
    const uint8_t *t;
    size_t n;
    int r;
    if (user != VHSM_USER_SO && user != VHSM_USER_USER)
        return -EINVAL;
    if ((r = pin_arg_check(pin, pin_len)) < 0)
        return r;
    r = call_begin(&call, c, VHSM_OP_LOGIN);
    if (r < 0)
        return r;
    vhsm_buf_put_u32(&c->out, VHSM_TAG_USER_TYPE, user);
    vhsm_buf_put(&c->out, VHSM_TAG_PIN, pin, pin_len);
    r = call_run(&call);
    if (r >= 0) {
        if (vhsm_body_get(call.body, call.len, VHSM_TAG_TICKET, &t, &n) < 0 ||
            n != VHSM_TICKET_SIZE) {
            set_error("malformed login reply from vhsmd");
            r = -EPROTO;
        } else if (ret_ticket)
            memcpy(ret_ticket, t, VHSM_TICKET_SIZE);
    }
    call_end(&call);
    return r;
}

int vhsm_login_ticket(VhsmClient *c, const uint8_t ticket[VHSM_TICKET_SIZE]) {
    Call call;
    int r;
    if (!ticket)
        return -EINVAL;
    r = call_begin(&call, c, VHSM_OP_LOGIN_TICKET);
    if (r < 0)
        return r;
    vhsm_buf_put(&c->out, VHSM_TAG_TICKET, ticket, VHSM_TICKET_SIZE);
    return call_finish(&call);
}

int vhsm_logout(VhsmClient *c) {
    Call call;
    int r = call_begin(&call, c, VHSM_OP_LOGOUT);
    if (r < 0)
        return r;
    return call_finish(&call);
}

int vhsm_init_pin(VhsmClient *c, const void *pin, size_t pin_len) {
    Call call;
    int r;
    if ((r = pin_arg_check(pin, pin_len)) < 0)
        return r;
    r = call_begin(&call, c, VHSM_OP_INIT_PIN);
    if (r < 0)
        return r;
    vhsm_buf_put(&c->out, VHSM_TAG_PIN, pin, pin_len);
    return call_finish(&call);
}

int vhsm_set_pin(VhsmClient *c, const void *old_pin, size_t old_len, const void *new_pin,
                 size_t new_len) {
    Call call;
    int r;
    if ((r = pin_arg_check(old_pin, old_len)) < 0 || (r = pin_arg_check(new_pin, new_len)) < 0)
        return r;
    r = call_begin(&call, c, VHSM_OP_SET_PIN);
    if (r < 0)
        return r;
    vhsm_buf_put(&c->out, VHSM_TAG_PIN, old_pin, old_len);
    vhsm_buf_put(&c->out, VHSM_TAG_NEW_PIN, new_pin, new_len);
    return call_finish(&call);
}

/* ---- revision 2: objects ---- */

static void put_attrs(VhsmBuf *b, const VhsmAttr *attrs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = vhsm_buf_put_reserve(b, VHSM_TAG_ATTR, 4 + attrs[i].len);
        if (!p)
            return;
        p[0] = (uint8_t)(attrs[i].type >> 24);
        p[1] = (uint8_t)(attrs[i].type >> 16);
        p[2] = (uint8_t)(attrs[i].type >> 8);
        p[3] = (uint8_t)attrs[i].type;
        if (attrs[i].len)
            memcpy(p + 4, attrs[i].value, attrs[i].len);
        vhsm_buf_commit(b, 4 + attrs[i].len);
    }
}

static int attrs_arg_check(const VhsmAttr *attrs, size_t n) {
    if (n > VHSM_ATTR_MAX || (n > 0 && !attrs))
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (attrs[i].len > VHSM_ATTR_VALUE_MAX || (attrs[i].len > 0 && !attrs[i].value))
            return -EINVAL;
    return 0;
}

int vhsm_object_create(VhsmClient *c, const char *name, const VhsmObjectSpec *spec,
                       const void *value, size_t value_len) {
    VhsmKeySpec ks;
    Call call;
    int r;
    if (!name || !spec || !spec->type)
        return -EINVAL;
    if (!value != !value_len || value_len > VHSM_OBJ_VALUE_MAX)
        return -EINVAL;
    if ((r = attrs_arg_check(spec->attrs, spec->n_attrs)) < 0)
        return r;
    ks = (VhsmKeySpec){.type = spec->type, .acl = spec->acl};
    r = call_begin(&call, c, VHSM_OP_OBJECT_CREATE);
    if (r < 0)
        return r;
    put_name(&c->out, name);
    put_spec(&c->out, &ks);
    if (spec->flags)
        vhsm_buf_put_u32(&c->out, VHSM_TAG_OBJ_FLAGS, spec->flags);
    put_attrs(&c->out, spec->attrs, spec->n_attrs);
    if (value)
        vhsm_buf_put(&c->out, VHSM_TAG_VALUE, value, value_len);
    return call_finish(&call);
}

int vhsm_object_set(VhsmClient *c, const char *name, uint32_t flags_set, uint32_t flags_clear,
                    const VhsmAttr *attrs, size_t n_attrs) {
    Call call;
    int r;
    if (!name || (r = attrs_arg_check(attrs, n_attrs)) < 0)
        return -EINVAL;
    r = call_begin(&call, c, VHSM_OP_OBJECT_SET);
    if (r < 0)
        return r;
    put_name(&c->out, name);
    if (flags_set)
        vhsm_buf_put_u32(&c->out, VHSM_TAG_OBJ_FLAGS, flags_set);
    if (flags_clear)
        vhsm_buf_put_u32(&c->out, VHSM_TAG_OBJ_FLAGS_CLEAR, flags_clear);
    put_attrs(&c->out, attrs, n_attrs);
    return call_finish(&call);
}

int vhsm_object_copy(VhsmClient *c, const char *name, const char *new_name, uint32_t flags_set,
                     uint32_t flags_clear, const VhsmAttr *attrs, size_t n_attrs) {
    Call call;
    int r;
    if (!name || !new_name || (r = attrs_arg_check(attrs, n_attrs)) < 0)
        return -EINVAL;
    r = call_begin(&call, c, VHSM_OP_OBJECT_COPY);
    if (r < 0)
        return r;
    put_name(&c->out, name);
    vhsm_buf_put_str(&c->out, VHSM_TAG_NEW_KEY_NAME, new_name);
    if (flags_set)
        vhsm_buf_put_u32(&c->out, VHSM_TAG_OBJ_FLAGS, flags_set);
    if (flags_clear)
        vhsm_buf_put_u32(&c->out, VHSM_TAG_OBJ_FLAGS_CLEAR, flags_clear);
    put_attrs(&c->out, attrs, n_attrs);
    return call_finish(&call);
}

void vhsm_object_free(VhsmObject *o) {
    if (!o)
        return;
    free(o->value);
    for (size_t i = 0; i < o->n_attrs; i++)
        free((void *)o->attrs[i].value);
    free(o->attrs);
    *o = (VhsmObject){0};
}

void vhsm_objects_free(VhsmObject *o, size_t n) {
    if (!o)
        return;
    for (size_t i = 0; i < n; i++)
        vhsm_object_free(&o[i]);
    free(o);
}

static int hex_nibble(char ch) {
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

/* Lowercase hex (as vhsmd writes it) into a malloc'd buffer. */
static int hex_decode(const char *s, uint8_t **ret, size_t *ret_len) {
    size_t n = strlen(s);
    uint8_t *p;
    if (n % 2)
        return -EPROTO;
    p = malloc(n / 2 ? n / 2 : 1);
    if (!p)
        return -ENOMEM;
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hex_nibble(s[2 * i]), lo = hex_nibble(s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(p);
            return -EPROTO;
        }
        p[i] = (uint8_t)(hi << 4 | lo);
    }
    *ret = p;
    *ret_len = n / 2;
    return 0;
}

/* A key description (docs/protocol.md) -> VhsmObject. */
static int object_from_json(const json_t *k, VhsmObject *ret) {
    VhsmObject o = {0};
    const char *name = json_string_value(json_object_get(k, "name"));
    const char *type = json_string_value(json_object_get(k, "type"));
    const char *spki = json_string_value(json_object_get(k, "spki"));
    const char *value = json_string_value(json_object_get(k, "value")); /* data, cert, public */
    const json_t *flags = json_object_get(k, "flags"), *bits = json_object_get(k, "bits");
    const json_t *attrs = json_object_get(k, "attrs"), *a;
    size_t i;
    int r;

    if (!name || !type || strlen(name) >= sizeof o.name || strlen(type) >= sizeof o.type ||
        !json_is_integer(flags) || !json_is_integer(bits) || !json_is_array(attrs) ||
        json_array_size(attrs) > VHSM_ATTR_MAX)
        return -EPROTO;
    strcpy(o.name, name);
    strcpy(o.type, type);
    o.flags = (uint32_t)json_integer_value(flags);
    o.bits = (uint32_t)json_integer_value(bits);
    if (value)
        spki = value;
    if (spki && (r = hex_decode(spki, &o.value, &o.value_len)) < 0)
        return r;
    o.attrs = calloc(json_array_size(attrs) + 1, sizeof(VhsmAttr));
    if (!o.attrs) {
        vhsm_object_free(&o);
        return -ENOMEM;
    }
    json_array_foreach(attrs, i, a) {
        const char *v = json_string_value(json_object_get(a, "value"));
        const json_t *t = json_object_get(a, "type");
        uint8_t *p = NULL;
        size_t n = 0;
        if (!v || !json_is_integer(t) || (r = hex_decode(v, &p, &n)) < 0) {
            vhsm_object_free(&o);
            return -EPROTO;
        }
        o.attrs[o.n_attrs++] =
            (VhsmAttr){.type = (uint32_t)json_integer_value(t), .value = p, .len = n};
    }
    *ret = o;
    return 0;
}

int vhsm_object_get(VhsmClient *c, const char *name, VhsmObject *ret) {
    char *s = NULL;
    json_t *j;
    int r;
    if (!name || !ret)
        return -EINVAL;
    r = json_call(c, VHSM_OP_KEY_INFO, name, &s);
    if (r < 0)
        return r;
    j = json_loads(s, 0, NULL);
    free(s);
    if (!j)
        return -EPROTO;
    r = object_from_json(j, ret);
    json_decref(j);
    if (r == -EPROTO)
        set_error("malformed object description from vhsmd");
    return r;
}

int vhsm_object_list(VhsmClient *c, VhsmObject **ret, size_t *ret_n) {
    VhsmObject *objs = NULL;
    char *s = NULL;
    json_t *j, *k;
    size_t i, n;
    int r;
    if (!ret || !ret_n)
        return -EINVAL;
    r = vhsm_key_list(c, &s);
    if (r < 0)
        return r;
    j = json_loads(s, 0, NULL);
    free(s);
    if (!j || !json_is_array(j)) {
        json_decref(j);
        set_error("malformed key list from vhsmd");
        return -EPROTO;
    }
    n = json_array_size(j);
    objs = calloc(n + 1, sizeof(VhsmObject));
    if (!objs) {
        json_decref(j);
        return -ENOMEM;
    }
    json_array_foreach(j, i, k) {
        if ((r = object_from_json(k, &objs[i])) < 0) {
            vhsm_objects_free(objs, i);
            json_decref(j);
            if (r == -EPROTO)
                set_error("malformed object description from vhsmd");
            return r;
        }
    }
    json_decref(j);
    *ret = objs;
    *ret_n = n;
    return 0;
}

/* ---- revision 2: mechanisms with caller parameters ---- */

/* Branch par: the parameters of rsa-pss, rsa-oaep and hmac (HASH, MGF_HASH, ...). */
static void put_par_params(VhsmBuf *b, const char *algorithm, const VhsmParams *p) {
    vhsm_buf_put_str(b, VHSM_TAG_HASH, p->hash);
    if (p->mgf_hash)
        vhsm_buf_put_str(b, VHSM_TAG_MGF_HASH, p->mgf_hash);
    if (strcmp(algorithm, "rsa-pss") == 0)
        vhsm_buf_put_u32(b, VHSM_TAG_SALT_LEN, p->salt_len);
    if (strcmp(algorithm, "hmac") == 0 && p->tag_bits)
        vhsm_buf_put_u32(b, VHSM_TAG_MAC_LEN, p->tag_bits / 8);
    if (strcmp(algorithm, "rsa-oaep") == 0 && p->label_len)
        vhsm_buf_put(b, VHSM_TAG_OAEP_LABEL, p->label, p->label_len);
}

static bool par_alg(const char *algorithm) {
    return strcmp(algorithm, "rsa-pss") == 0 || strcmp(algorithm, "hmac") == 0;
}

static int oaep_ex(VhsmClient *c, uint16_t op, const char *name, const VhsmParams *p,
                   const void *in, size_t in_len, uint8_t **ret, size_t *ret_len) {
    Call call;
    int r;
    if (!name || !p || !p->hash || !ret || !ret_len || (in_len > 0 && !in) ||
        (p->label_len > 0 && !p->label) || p->label_len > VHSM_OAEP_LABEL_MAX)
        return -EINVAL;
    r = call_begin(&call, c, op);
    if (r < 0)
        return r;
    put_name(&c->out, name);
    vhsm_buf_put_str(&c->out, VHSM_TAG_ALGORITHM, "rsa-oaep");
    vhsm_buf_put(&c->out, VHSM_TAG_DATA, in, in_len);
    put_par_params(&c->out, "rsa-oaep", p);
    r = call_run(&call);
    if (r >= 0)
        r = copy_out(&call, VHSM_TAG_OUTPUT, ret, ret_len);
    call_end(&call);
    return r;
}

static int crypt_ex(VhsmClient *c, uint16_t op, const char *name, const char *algorithm,
                    const VhsmParams *p, const void *in, size_t in_len, uint8_t **ret,
                    size_t *ret_len) {
    Call call;
    int r;
    if (algorithm && strcmp(algorithm, "rsa-oaep") == 0)
        return oaep_ex(c, op, name, p, in, in_len, ret, ret_len);
    if (!name || !algorithm || !p || !ret || !ret_len || (in_len > 0 && !in) || !p->iv ||
        p->iv_len == 0 || (p->aad_len > 0 && !p->aad))
        return -EINVAL;
    if (strncmp(algorithm, "aes-", 4) != 0)
        return -EOPNOTSUPP;
    r = call_begin(&call, c, op);
    if (r < 0)
        return r;
    put_name(&c->out, name);
    vhsm_buf_put_str(&c->out, VHSM_TAG_ALGORITHM, algorithm);
    vhsm_buf_put(&c->out, VHSM_TAG_DATA, in, in_len);
    vhsm_buf_put(&c->out, VHSM_TAG_IV, p->iv, p->iv_len);
    if (p->aad_len)
        vhsm_buf_put(&c->out, VHSM_TAG_AAD, p->aad, p->aad_len);
    if (p->tag_bits)
        vhsm_buf_put_u32(&c->out, VHSM_TAG_TAG_BITS, p->tag_bits);
    if (p->counter_bits)
        vhsm_buf_put_u32(&c->out, VHSM_TAG_COUNTER_BITS, p->counter_bits);
    r = call_run(&call);
    if (r >= 0)
        r = copy_out(&call, VHSM_TAG_OUTPUT, ret, ret_len);
    call_end(&call);
    return r;
}

int vhsm_encrypt_ex(VhsmClient *c, const char *name, const char *algorithm, const VhsmParams *p,
                    const void *in, size_t in_len, uint8_t **ret, size_t *ret_len) {
    return crypt_ex(c, VHSM_OP_ENCRYPT_EX, name, algorithm, p, in, in_len, ret, ret_len);
}

int vhsm_decrypt_ex(VhsmClient *c, const char *name, const char *algorithm, const VhsmParams *p,
                    const void *in, size_t in_len, uint8_t **ret, size_t *ret_len) {
    return crypt_ex(c, VHSM_OP_DECRYPT_EX, name, algorithm, p, in, in_len, ret, ret_len);
}

int vhsm_sign_ex(VhsmClient *c, const char *name, const char *algorithm, unsigned flags,
                 const VhsmParams *p, const void *data, size_t len, uint8_t **ret_sig,
                 size_t *ret_sig_len) {
    Call call;
    int r;
    bool par = algorithm && par_alg(algorithm);
    if (!name || !algorithm || flags || (par ? !p || !p->hash : !!p) || (!data && len) ||
        (len == 0 && strcmp(algorithm, "hmac") != 0) || !ret_sig || !ret_sig_len)
        return -EINVAL;
    r = call_begin(&call, c, VHSM_OP_SIGN_EX);
    if (r < 0)
        return r;
    put_name(&c->out, name);
    vhsm_buf_put_str(&c->out, VHSM_TAG_ALGORITHM, algorithm);
    vhsm_buf_put(&c->out, VHSM_TAG_DATA, data, len);
    if (par)
        put_par_params(&c->out, algorithm, p);
    r = call_run(&call);
    if (r >= 0)
        r = copy_out(&call, VHSM_TAG_SIGNATURE, ret_sig, ret_sig_len);
    call_end(&call);
    return r;
}

int vhsm_verify_ex(VhsmClient *c, const char *name, const char *algorithm, unsigned flags,
                   const VhsmParams *p, const void *data, size_t len, const void *sig,
                   size_t sig_len) {
    Call call;
    int r;
    bool par = algorithm && par_alg(algorithm);
    if (!name || !algorithm || flags || (par ? !p || !p->hash : !!p) || (!data && len) ||
        (len == 0 && strcmp(algorithm, "hmac") != 0) || !sig)
        return -EINVAL;
    r = call_begin(&call, c, VHSM_OP_VERIFY_EX);
    if (r < 0)
        return r;
    put_name(&c->out, name);
    vhsm_buf_put_str(&c->out, VHSM_TAG_ALGORITHM, algorithm);
    vhsm_buf_put(&c->out, VHSM_TAG_DATA, data, len);
    if (par)
        put_par_params(&c->out, algorithm, p);
    vhsm_buf_put(&c->out, VHSM_TAG_SIGNATURE, sig, sig_len);
    return call_finish(&call);
}

/* ---- branch par: features, SO PIN reset ---- */

int vhsm_features(VhsmClient *c, uint32_t *ret) {
    Call call;
    uint32_t f = 0;
    int r;
    if (!ret)
        return -EINVAL;
    r = call_begin(&call, c, VHSM_OP_PING);
    if (r < 0)
        return r;
    r = call_run(&call);
    if (r >= 0) {
        int g = vhsm_body_get_u32(call.body, call.len, VHSM_TAG_FEATURES, &f);
        if (g == -ENOENT)
            f = 0; /* a daemon before these features */
        else if (g < 0) {
            set_error("malformed features in vhsmd's reply");
            r = -EPROTO;
        }
    }
    call_end(&call);
    if (r >= 0)
        *ret = f;
    return r;
}

int vhsm_token_reset_so_pin(VhsmClient *c, uint32_t uid, const void *new_pin, size_t new_len) {
    Call call;
    int r = pin_arg_check(new_pin, new_len);
    if (r < 0)
        return r;
    r = call_begin(&call, c, VHSM_OP_TOKEN_RESET_SO_PIN);
    if (r < 0)
        return r;
    vhsm_buf_put_u32(&c->out, VHSM_TAG_UID, uid);
    vhsm_buf_put(&c->out, VHSM_TAG_NEW_PIN, new_pin, new_len);
    return call_finish(&call);
}

/* ---- hard-wrap: key wrapping and derivation into objects ---- */

int vhsm_wrap_key(VhsmClient *c, const char *wrapping, const char *algorithm, const char *target,
                  uint8_t **ret, size_t *ret_len) {
    Call call;
    uint32_t n = 0;
    int r;
    if (!wrapping || !algorithm || !target || !ret_len)
        return -EINVAL;
    r = call_begin(&call, c, VHSM_OP_WRAP_KEY);
    if (r < 0)
        return r;
    put_name(&c->out, wrapping);
    vhsm_buf_put_str(&c->out, VHSM_TAG_ALGORITHM, algorithm);
    vhsm_buf_put_str(&c->out, VHSM_TAG_TARGET_NAME, target);
    if (!ret)
        vhsm_buf_put_u8(&c->out, VHSM_TAG_LENGTH_ONLY, 1);
    r = call_run(&call);
    if (r >= 0 && ret)
        r = copy_out(&call, VHSM_TAG_OUTPUT, ret, ret_len);
    else if (r >= 0) {
        r = vhsm_body_get_u32(call.body, call.len, VHSM_TAG_LENGTH, &n);
        if (r < 0)
            r = -EPROTO;
        else
            *ret_len = n;
    }
    call_end(&call);
    return r;
}

static int new_object_finish(Call *call, char *ret_type, size_t ret_type_size) {
    int r = call_run(call);
    if (r >= 0 && ret_type && ret_type_size > 0) {
        ret_type[0] = 0;
        if (vhsm_body_get_str(call->body, call->len, VHSM_TAG_KEY_TYPE, ret_type_size - 1, ret_type,
                              ret_type_size) < 0)
            ret_type[0] = 0;
    }
    call_end(call);
    return r;
}

static void put_new_object(VhsmBuf *b, const char *new_name, const VhsmObjectSpec *spec,
                           size_t value_len) {
    vhsm_buf_put_str(b, VHSM_TAG_NEW_KEY_NAME, new_name);
    vhsm_buf_put_str(b, VHSM_TAG_KEY_TYPE, spec->type);
    if (value_len)
        vhsm_buf_put_u32(b, VHSM_TAG_VALUE_LEN, (uint32_t)value_len);
    if (spec->flags)
        vhsm_buf_put_u32(b, VHSM_TAG_OBJ_FLAGS, spec->flags);
    put_attrs(b, spec->attrs, spec->n_attrs);
    put_acl(b, spec->acl);
}

int vhsm_unwrap_key(VhsmClient *c, const char *unwrapping, const char *algorithm,
                    const void *wrapped, size_t wrapped_len, const char *new_name,
                    const VhsmObjectSpec *spec, size_t value_len, char *ret_type,
                    size_t ret_type_size) {
    Call call;
    int r;
    if (!unwrapping || !algorithm || !wrapped || wrapped_len == 0 || !new_name || !spec ||
        !spec->type || value_len > UINT32_MAX)
        return -EINVAL;
    if ((r = attrs_arg_check(spec->attrs, spec->n_attrs)) < 0)
        return r;
    r = call_begin(&call, c, VHSM_OP_UNWRAP_KEY);
    if (r < 0)
        return r;
    put_name(&c->out, unwrapping);
    vhsm_buf_put_str(&c->out, VHSM_TAG_ALGORITHM, algorithm);
    vhsm_buf_put(&c->out, VHSM_TAG_DATA, wrapped, wrapped_len);
    put_new_object(&c->out, new_name, spec, value_len);
    return new_object_finish(&call, ret_type, ret_type_size);
}

int vhsm_derive_key(VhsmClient *c, const char *base, const void *point, size_t point_len,
                    const char *kdf, const void *shared_data, size_t shared_len,
                    const char *new_name, const VhsmObjectSpec *spec, size_t value_len,
                    char *ret_type, size_t ret_type_size) {
    Call call;
    int r;
    if (!base || !point || point_len == 0 || !kdf || (shared_len > 0 && !shared_data) ||
        !new_name || !spec || !spec->type || value_len == 0 || value_len > UINT32_MAX)
        return -EINVAL;
    if ((r = attrs_arg_check(spec->attrs, spec->n_attrs)) < 0)
        return r;
    r = call_begin(&call, c, VHSM_OP_DERIVE_KEY);
    if (r < 0)
        return r;
    put_name(&c->out, base);
    vhsm_buf_put_str(&c->out, VHSM_TAG_ALGORITHM, "ecdh1");
    vhsm_buf_put(&c->out, VHSM_TAG_EC_POINT, point, point_len);
    vhsm_buf_put_str(&c->out, VHSM_TAG_KDF, kdf);
    if (shared_len)
        vhsm_buf_put(&c->out, VHSM_TAG_SHARED_DATA, shared_data, shared_len);
    put_new_object(&c->out, new_name, spec, value_len);
    return new_object_finish(&call, ret_type, ret_type_size);
}
