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

struct VhsmClient {
    int fd;
    bool broken;
    pthread_mutex_t lock;
    uint32_t next_id;
    unsigned timeout_ms;
    VhsmBuf out;
    uint8_t *in;
    size_t in_cap;
    size_t in_len; /* bytes received by the current call (wiped at its end) */
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
    if (c->in) {
        explicit_bzero(c->in, c->in_cap);
        free(c->in);
    }
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

static int send_all(VhsmClient *c, int64_t deadline) {
    size_t off = 0;
    while (off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + off, c->out.len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            int r;
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                return negative_errno();
            r = wait_fd(c->fd, POLLOUT, deadline);
            if (r < 0)
                return r;
            continue;
        }
        off += (size_t)n;
    }
    return 0;
}

/* Reads one complete frame into c->in. Returns the total frame size. */
static int64_t now_us(void) {
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Busy-poll window for replies, in microseconds: $VHSM_SPIN_US (0..10000; 0 = off), default 50.
 * On virtual CPUs a sleep/wake-up pair costs tens of microseconds, more than most operations. */
static int64_t spin_window(void) {
    static _Atomic int64_t cached = -1;
    int64_t v = atomic_load(&cached);
    if (v < 0) {
        const char *e = getenv("VHSM_SPIN_US");
        long l = e ? strtol(e, NULL, 10) : 50;
        v = l > 0 && l <= 10000 ? l : 0;
        atomic_store(&cached, v);
    }
    return v;
}

static int recv_frame(VhsmClient *c, int64_t deadline, VhsmHeader *ret_h) {
    int64_t spin_until = spin_window() ? now_us() + spin_window() : 0;
    size_t have = 0, need = VHSM_HEADER_SIZE;
    bool header_done = false;
    VhsmHeader h = {0};
    int r;

    if (!c->in) {
        c->in = malloc(CLIENT_READ_CHUNK);
        if (!c->in)
            return -ENOMEM;
        c->in_cap = CLIENT_READ_CHUNK;
    }
    for (;;) {
        ssize_t n;
        if (!header_done && have >= VHSM_HEADER_SIZE) {
            r = vhsm_header_decode(c->in, &h);
            if (r < 0 || h.kind != VHSM_KIND_RESPONSE)
                return -EPROTO;
            header_done = true;
            need = VHSM_HEADER_SIZE + h.body_len;
            if (need > c->in_cap) {
                uint8_t *p = malloc(need);
                if (!p)
                    return -ENOMEM;
                memcpy(p, c->in, have);
                explicit_bzero(c->in, c->in_cap);
                free(c->in);
                c->in = p;
                c->in_cap = need;
            }
        }
        if (header_done && have >= need)
            break;
        /* Blocking read (SO_RCVTIMEO bounds it): one syscall per reply in the common case,
         * instead of a failing non-blocking read plus poll plus read. */
        n = recv(c->fd, c->in + have, c->in_cap - have, spin_until ? MSG_DONTWAIT : 0);
        if (n < 0 && spin_until && errno == EAGAIN) {
            /* Short operations answer within microseconds: poll briefly before sleeping, which
             * saves a sleep/wake-up pair (the dominant cost on virtual CPUs). */
            if (now_us() >= spin_until)
                spin_until = 0;
            else
                sched_yield();
            continue;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return -ETIMEDOUT;
            return negative_errno();
        }
        if (deadline > 0 && now_ms() > deadline)
            return -ETIMEDOUT;
        if (n == 0)
            return have == 0 ? -ECONNRESET : -EPROTO;
        have += (size_t)n;
        c->in_len = have;
    }
    if (have != need)
        return -EPROTO; /* a reply we did not ask for */
    *ret_h = h;
    return (int)need;
}

/* Sends the frame built in c->out (begun with request id id) and receives the reply. On
 * success *ret_body points into c->in (valid until the buffers are wiped). */
static int transact(VhsmClient *c, uint32_t id, const uint8_t **ret_body, size_t *ret_len) {
    int64_t deadline = c->timeout_ms ? now_ms() + c->timeout_ms : 0;
    VhsmHeader h;
    const uint8_t *body;
    int r;

    r = send_all(c, deadline);
    if (r >= 0)
        r = recv_frame(c, deadline, &h);
    if (r < 0) {
        c->broken = true;
        if (r == -ETIMEDOUT)
            set_error("vhsmd did not answer in time");
        else if (r == -EPROTO)
            set_error("malformed reply from vhsmd");
        else
            set_error("connection to vhsmd failed: %s", strerror(-r));
        return r;
    }
    if (h.id != id) {
        c->broken = true;
        set_error("reply to another request from vhsmd");
        return -EPROTO;
    }
    body = c->in + VHSM_HEADER_SIZE;
    if (vhsm_body_validate(body, h.body_len) < 0) {
        c->broken = true;
        set_error("malformed reply body from vhsmd");
        return -EPROTO;
    }
    if (h.code != VHSM_STATUS_OK) {
        char msg[VHSM_MAX_STRING + 1];
        uint32_t e = 0;
        r = vhsm_status_to_errno(h.code);
        /* Prefer the daemon's exact errno when it agrees with the status. */
        if (vhsm_body_get_u32(body, h.body_len, VHSM_TAG_ERRNO, &e) == 0 && e > 0 && e < 4096 &&
            vhsm_status_from_errno(-(int)e) == h.code)
            r = -(int)e;
        if (vhsm_body_get_str(body, h.body_len, VHSM_TAG_MESSAGE, VHSM_MAX_STRING, msg,
                              sizeof msg) == 0)
            set_error("%s", msg);
        else
            set_error("%s", vhsm_status_to_string(h.code));
        return r;
    }
    last_error[0] = 0;
    *ret_body = body;
    *ret_len = h.body_len;
    return 0;
}

static void wipe_io(VhsmClient *c) {
    vhsm_buf_reset(&c->out);
    if (c->in)
        explicit_bzero(c->in, MIN(c->in_len, c->in_cap));
    c->in_len = 0;
}

/* A call in progress: holds the connection lock. */
typedef struct Call {
    VhsmClient *c;
    uint32_t id;
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
    *call = (Call){.c = c, .id = c->next_id++};
    vhsm_buf_reset(&c->out);
    vhsm_buf_begin(&c->out, VHSM_KIND_REQUEST, opcode, call->id);
    return 0;
}

static int call_run(Call *call) {
    int r = vhsm_buf_end(&call->c->out);
    if (r < 0) {
        set_error("request too large or out of memory");
        return r;
    }
    return transact(call->c, call->id, &call->body, &call->len);
}

static void call_end(Call *call) {
    wipe_io(call->c);
    (void)pthread_mutex_unlock(&call->c->lock);
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
    r = call_run(&call);
    call_end(&call);
    return r;
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
    r = call_run(&call);
    call_end(&call);
    return r;
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
    r = call_run(&call);
    call_end(&call);
    return r;
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

int vhsm_key_list(VhsmClient *c, char **ret_json) {
    return json_call(c, VHSM_OP_KEY_LIST, NULL, ret_json);
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
    r = call_run(&call);
    call_end(&call);
    return r;
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
    r = call_run(&call);
    call_end(&call);
    return r;
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

static int data_op(VhsmClient *c, const OpArgs *a, uint8_t **ret, size_t *ret_len) {
    Call call;
    int r;
    if (!a->name || (!a->data && a->len > 0) || (a->out_tag && !ret))
        return -EINVAL;
    r = call_begin(&call, c, a->opcode);
    if (r < 0)
        return r;
    put_name(&c->out, a->name);
    if (a->algorithm)
        vhsm_buf_put_str(&c->out, VHSM_TAG_ALGORITHM, a->algorithm);
    if (a->flags)
        vhsm_buf_put_u32(&c->out, VHSM_TAG_FLAGS, a->flags);
    if (a->version)
        vhsm_buf_put_u32(&c->out, VHSM_TAG_KEY_VERSION, a->version);
    vhsm_buf_put(&c->out, VHSM_TAG_DATA, a->data, a->len);
    if (a->aad)
        vhsm_buf_put(&c->out, VHSM_TAG_AAD, a->aad, a->aad_len);
    if (a->extra_tag)
        vhsm_buf_put(&c->out, a->extra_tag, a->extra, a->extra_len);
    r = call_run(&call);
    if (r >= 0 && a->out_tag)
        r = copy_out(&call, a->out_tag, ret, ret_len);
    call_end(&call);
    return r;
}

int vhsm_encrypt(VhsmClient *c, const char *name, const char *algorithm, unsigned flags,
                 const void *pt, size_t pt_len, const void *aad, size_t aad_len, uint8_t **ret_ct,
                 size_t *ret_ct_len) {
    OpArgs a = {.opcode = VHSM_OP_ENCRYPT,
                .name = name,
                .algorithm = algorithm,
                .flags = flags,
                .data = pt,
                .len = pt_len,
                .aad = aad,
                .aad_len = aad_len,
                .out_tag = VHSM_TAG_OUTPUT};
    return data_op(c, &a, ret_ct, ret_ct_len);
}

int vhsm_decrypt(VhsmClient *c, const char *name, const char *algorithm, unsigned flags,
                 uint32_t version, const void *ct, size_t ct_len, const void *aad, size_t aad_len,
                 uint8_t **ret_pt, size_t *ret_pt_len) {
    OpArgs a = {.opcode = VHSM_OP_DECRYPT,
                .name = name,
                .algorithm = algorithm,
                .flags = flags,
                .version = version,
                .data = ct,
                .len = ct_len,
                .aad = aad,
                .aad_len = aad_len,
                .out_tag = VHSM_TAG_OUTPUT};
    return data_op(c, &a, ret_pt, ret_pt_len);
}

int vhsm_sign(VhsmClient *c, const char *name, const char *algorithm, unsigned flags,
              const void *data, size_t len, uint8_t **ret_sig, size_t *ret_sig_len) {
    OpArgs a = {.opcode = VHSM_OP_SIGN,
                .name = name,
                .algorithm = algorithm,
                .flags = flags,
                .data = data,
                .len = len,
                .out_tag = VHSM_TAG_SIGNATURE};
    return data_op(c, &a, ret_sig, ret_sig_len);
}

int vhsm_verify(VhsmClient *c, const char *name, const char *algorithm, unsigned flags,
                uint32_t version, const void *data, size_t len, const void *sig, size_t sig_len) {
    OpArgs a = {.opcode = VHSM_OP_VERIFY,
                .name = name,
                .algorithm = algorithm,
                .flags = flags,
                .version = version,
                .data = data,
                .len = len,
                .extra_tag = VHSM_TAG_SIGNATURE,
                .extra = sig,
                .extra_len = sig_len};
    if (!sig && sig_len > 0)
        return -EINVAL;
    return data_op(c, &a, NULL, NULL);
}

int vhsm_mac(VhsmClient *c, const char *name, const void *data, size_t len, uint8_t **ret_tag,
             size_t *ret_tag_len) {
    OpArgs a = {.opcode = VHSM_OP_MAC,
                .name = name,
                .data = data,
                .len = len,
                .out_tag = VHSM_TAG_SIGNATURE};
    return data_op(c, &a, ret_tag, ret_tag_len);
}

int vhsm_mac_verify(VhsmClient *c, const char *name, const void *data, size_t len, const void *tag,
                    size_t tag_len) {
    OpArgs a = {.opcode = VHSM_OP_MAC_VERIFY,
                .name = name,
                .data = data,
                .len = len,
                .extra_tag = VHSM_TAG_SIGNATURE,
                .extra = tag,
                .extra_len = tag_len};
    if (!tag && tag_len > 0)
        return -EINVAL;
    return data_op(c, &a, NULL, NULL);
}

int vhsm_wrap(VhsmClient *c, const char *name, const char *algorithm, unsigned flags,
              const void *data, size_t len, uint8_t **ret, size_t *ret_len) {
    OpArgs a = {.opcode = VHSM_OP_WRAP,
                .name = name,
                .algorithm = algorithm,
                .flags = flags,
                .data = data,
                .len = len,
                .out_tag = VHSM_TAG_OUTPUT};
    return data_op(c, &a, ret, ret_len);
}

int vhsm_unwrap(VhsmClient *c, const char *name, const char *algorithm, unsigned flags,
                uint32_t version, const void *data, size_t len, uint8_t **ret, size_t *ret_len) {
    OpArgs a = {.opcode = VHSM_OP_UNWRAP,
                .name = name,
                .algorithm = algorithm,
                .flags = flags,
                .version = version,
                .data = data,
                .len = len,
                .out_tag = VHSM_TAG_OUTPUT};
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
    r = call_run(&call);
    call_end(&call);
    return r;
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

int vhsm_import_jwe(VhsmClient *c, const char *jwe, const char *name, const VhsmKeySpec *spec) {
    Call call;
    int r;
    if (!jwe || !name || !spec || !spec->type)
        return -EINVAL;
    r = call_begin(&call, c, VHSM_OP_IMPORT_JWE);
    if (r < 0)
        return r;
    put_name(&c->out, name);
    vhsm_buf_put_str(&c->out, VHSM_TAG_JWE, jwe);
    put_spec(&c->out, spec);
    r = call_run(&call);
    call_end(&call);
    return r;
}

int vhsm_attestation_status(VhsmClient *c, char **ret_json) {
    return json_call(c, VHSM_OP_ATTESTATION_STATUS, NULL, ret_json);
}

int vhsm_attestation_set(VhsmClient *c, uint64_t t) {
    Call call;
    int r = call_begin(&call, c, VHSM_OP_ATTESTATION_SET);
    if (r < 0)
        return r;
    vhsm_buf_put_u64(&c->out, VHSM_TAG_TIMESTAMP, t);
    r = call_run(&call);
    call_end(&call);
    return r;
}
