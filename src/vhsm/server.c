/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The vhsmd socket server (design in server.h and docs/protocol.md).
 *
 * Invariants:
 *  - A connection is handled by at most one worker at a time (EPOLLONESHOT; re-armed only by
 *    the worker that handled it), so Conn fields other than the stall clocks need no lock.
 *  - The connection list (for limits, stall expiry and shutdown) is guarded by s->lock; a
 *    connection leaves the list before its fd is closed, so the housekeeper's shutdown() under
 *    the lock never touches a recycled fd.
 *  - Input and output buffers are wiped as soon as their bytes are consumed or sent.
 *  - An input buffer grows only as data arrives (never to a frame's announced length up front,
 *    beyond CONN_BUF_UPFRONT), and every byte of it above CONN_BUF_DEFAULT is charged to two
 *    budgets under s->lock: the server's (CONN_BUDGET_TOTAL, of which non-root peers together
 *    get all but CONN_BUDGET_ROOT, so that many uids cannot lock the agent out) and, except for
 *    root, the peer uid's (CONN_BUDGET_UID). A growth that would exceed one is refused with
 *    status busy and the connection closed, so a peer trickling announced 1 MiB frames over
 *    many connections cannot make the daemon hold (and, under mlockall, lock) memory without
 *    bound.
 *  - Connection limits (issue 8, finding 3): the connection limit stays below the open-file limit
 *    (less a reserve for the daemon's own files), the last root_connections slots are reserved
 *    for root (the agent) so that no mix of other uids can lock it out, and the limits are
 *    checked with SO_PEERCRED alone, before any /proc read about the peer. If accept() fails for
 *    lack of file descriptors or memory, the listener leaves the main epoll set (it is
 *    level-triggered: it would wake the main thread again at once, forever) until a connection
 *    closes or the next housekeeping tick.
 *  - Log lines a client can provoke are rate-limited per uid (vlog.h); a connection that keeps
 *    sending denied requests (more than CONN_DENIALS_MAX within CONN_DENIALS_WINDOW_MS) is closed.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/fileio.h"
#include "agentq.h"
#include "core/log.h"
#include "server.h"
#include "vlog.h"

#define CONN_BUF_DEFAULT (16u * 1024u) /* every connection's input buffer; above it is charged */
#define CONN_BUF_UPFRONT (64u * 1024u) /* frames up to this get all their room at once */
#define CONN_BUF_STREAM (64u * 1024u)  /* input buffer of a client streaming requests (charged) */
#define CONN_OUT_HIGH (256u * 1024u)   /* stop answering buffered requests above this */
#define CONN_OUT_FLUSH (64u * 1024u)   /* send replies once this many are queued */
#define CONN_TURN_BYTES (1u << 20)     /* a worker's turn on a connection: this much input ... */
#define CONN_TURN_US 2000              /* ... or this long, then the others get theirs */
#define CONN_BUDGET_TOTAL ((size_t)64u << 20) /* input bytes above the default, all connections */
#define CONN_BUDGET_UID ((size_t)8u << 20)    /* the same, per non-root uid */
#define CONN_BUDGET_ROOT ((size_t)8u << 20)   /* of the total, usable only by root (the agent) */
#define CONN_DENIALS_MAX 64                   /* denied requests a connection may send ... */
#define CONN_DENIALS_WINDOW_MS 10000          /* ... within this long; one more closes it */
#define FD_RESERVE_BASE 64      /* files kept for the daemon itself: keystore, /proc, syslog, ... */
#define FD_RESERVE_PER_WORKER 4 /* ... and per worker (keystore saves, OpenSSL) */

typedef struct Conn {
    int fd;
    Peer peer;
    uint8_t *in;
    size_t in_len, in_cap;
    VhsmBuf out;
    size_t out_off;
    bool close_after_flush;
    bool streaming;      /* the client keeps the socket full: CONN_BUF_STREAM input buffer */
    int64_t turn_end_us; /* the current turn (conn_handle) ends then */
    size_t charged;   /* bytes of in_cap above CONN_BUF_DEFAULT charged to the budgets; s->lock */
    unsigned denials; /* denied requests since denials_since_ms */
    int64_t denials_since_ms;
    _Atomic int64_t in_since;  /* ms: start of the pending partial frame, 0 = none */
    _Atomic int64_t out_since; /* ms: since when a reply waits for the client to read, 0 = none */
    /* The agent channel: the request at the front of the input buffer waits for the agent (an
     * application's) or for a job (an agent's AGENT_WAIT); the connection reads no further frames
     * until it is answered. Not stalled meanwhile. */
    bool park_front;    /* owner only */
    atomic_bool parked; /* read by the housekeeper (no stall expiry) */
    AgentqConn aq;      /* the agent queue's part (its lock) */
    struct Conn *prev, *next;
} Conn;

struct Server {
    ServerConfig cfg;
    Dispatch *dispatch;
    char *path;
    dev_t sock_dev;
    ino_t sock_ino;
    int listen_fd;
    int main_epoll;
    int work_epoll;
    int stop_fd;  /* eventfd in work_epoll: workers exit */
    int wake_fd;  /* eventfd in main_epoll: stop requested */
    int timer_fd; /* housekeeping tick */
    int agent_fd; /* eventfd in main_epoll: the agent queue has a new deadline */
    Agentq *agentq;
    pthread_t *workers;
    unsigned n_workers;
    pthread_mutex_t lock;
    Conn *conns;
    unsigned n_conns;
    size_t charged;     /* sum of Conn.charged; s->lock */
    bool accept_paused; /* listen_fd is out of main_epoll (accept() lacked fds); s->lock */
    atomic_bool stopping;
    atomic_uint idle_workers; /* in epoll_wait: free for any connection (conn_spin) */
};

static int64_t now_ms(void) {
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t now_us(void) {
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void lock_guard_release(pthread_mutex_t **m) {
    if (*m)
        (void)pthread_mutex_unlock(*m);
}
#define LOCK_GUARD(m)                                                                              \
    _cleanup_(lock_guard_release) _unused_ pthread_mutex_t *NT_CONCAT(guard_, __LINE__) = ({       \
        (void)pthread_mutex_lock(m);                                                               \
        (m);                                                                                       \
    })

static void conn_free(Conn *c) {
    if (c->fd >= 0)
        (void)close(c->fd);
    c->peer.session = vault_session_unref(c->peer.session);
    peer_done(&c->peer);
    if (c->in) {
        explicit_bzero(c->in, c->in_cap);
        free(c->in);
    }
    vhsm_buf_done(&c->out);
    free(c);
}

static void accept_resume_locked(Server *s);
static _Atomic uint64_t next_conn_id; /* Peer.conn_id: 1, 2, ... */

/* Removes c from the list, then closes it. Only the worker owning c (or the main thread after
 * the workers stopped) calls this. */
static void conn_close(Server *s, Conn *c) {
    agentq_conn_gone(s->agentq, &c->aq);         /* before anyone could reuse c */
    dispatch_conn_closed(s->dispatch, &c->peer); /* its session objects die with it */
    {
        LOCK_GUARD(&s->lock);
        if (c->prev)
            c->prev->next = c->next;
        else
            s->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        s->n_conns--;
        s->charged -= c->charged;
        c->charged = 0;
        accept_resume_locked(s); /* an fd is about to be free */
    }
    log_debug("Connection of uid %u pid %d closed.", (unsigned)c->peer.uid, (int)c->peer.pid);
    conn_free(c);
}

/* EPOLLRDHUP only with EPOLLIN: a client that half-closes while its replies do not fit would
 * otherwise wake an EPOLLOUT wait at once, forever (a worker spinning until the stall timeout). */
static int conn_arm(Server *s, Conn *c, uint32_t events) {
    struct epoll_event ev = {
        .events = events | EPOLLONESHOT | ((events & EPOLLIN) ? EPOLLRDHUP : 0),
        .data.ptr = c,
    };
    if (epoll_ctl(s->work_epoll, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        return negative_errno();
    return 0;
}

/* Sends pending output. Returns 0 when all is sent, -EAGAIN if the socket is full. */
static int conn_flush(Conn *c) {
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? -EAGAIN : negative_errno();
        }
        c->out_off += (size_t)n;
    }
    vhsm_buf_reset(&c->out);
    c->out_off = 0;
    return 0;
}

/* Whether the replies queued so far should be sent before more requests are answered: enough
 * for one efficient write. Otherwise they go out when the socket is drained (a batch's last
 * request answered: one wake-up of the client per batch) or when the turn ends (conn_handle),
 * which bounds how long a finished reply can wait behind slow requests. */
static bool conn_flush_due(const Conn *c) {
    return c->out.len - c->out_off >= CONN_OUT_FLUSH;
}

static bool conn_turn_over(const Conn *c) {
    return now_us() >= c->turn_end_us;
}

/* Counts a denied request; true if the connection has had more than CONN_DENIALS_MAX within
 * CONN_DENIALS_WINDOW_MS (a window opened by the first denial), and must be closed: a client
 * probing or hammering keys it may not use gets nothing from keeping its connection. */
static bool conn_denied_too_often(Conn *c) {
    int64_t now = now_ms();
    if (c->denials == 0 || now - c->denials_since_ms > CONN_DENIALS_WINDOW_MS) {
        c->denials = 0;
        c->denials_since_ms = now;
    }
    if (++c->denials <= CONN_DENIALS_MAX)
        return false;
    log_uid_warning(
        c->peer.uid,
        "Closing connection of uid %u pid %d: more than %u denied requests within %u s.",
        (unsigned)c->peer.uid, (int)c->peer.pid, CONN_DENIALS_MAX, CONN_DENIALS_WINDOW_MS / 1000);
    return true;
}

/* The agent channel's requests (root only). Returns 0 (answered), 1 (denied), 2 (the
 * AGENT_WAIT waits: parking), or -ENOMEM. */
static int agent_reply_json(VhsmBuf *out, uint32_t id, json_t *j) {
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return dispatch_reply_error(out, id, -ENOMEM, "out of memory");
    vhsm_buf_begin(out, VHSM_KIND_RESPONSE, VHSM_STATUS_OK, id);
    vhsm_buf_put_str(out, VHSM_TAG_JSON, text);
    free(text);
    return vhsm_buf_end(out);
}

static int agent_wait(Server *s, Conn *c, const VhsmHeader *h, const uint8_t *body, bool resumed) {
    _cleanup_free_ AgentqWaitRequest *w = malloc(sizeof *w);
    const char *error = NULL;
    AgentqJobInfo job;
    int r;

    if (!w)
        return dispatch_reply_error(&c->out, h->id, -ENOMEM, "out of memory");
    r = agentq_wait_request_parse(body, h->body_len, w, &error);
    if (r < 0)
        return dispatch_reply_error(&c->out, h->id, r, error);
    r = agentq_agent_wait(s->agentq, &c->aq, w->patterns, w->n_patterns, w->wait_ms, resumed, &job);
    if (r == 2)
        return 2;
    if (r < 0)
        return dispatch_reply_error(&c->out, h->id, r, "agent-wait failed");
    if (r == 0)
        return agent_reply_json(&c->out, h->id, json_object());
    return agent_reply_json(&c->out, h->id,
                            json_pack("{s:I,s:s,s:s,s:I}", "id", (json_int_t)job.id, "key", job.key,
                                      "reason", job.reason, "parked", (json_int_t)job.parked));
}

static int agent_done(Server *s, Conn *c, const VhsmHeader *h, const uint8_t *body) {
    char msg[VHSM_MAX_AGENT_MESSAGE + 1];
    const char *error = NULL;
    uint16_t status;
    uint64_t id;
    int r;

    r = agentq_done_request_parse(body, h->body_len, &id, &status, msg, &error);
    if (r < 0)
        return dispatch_reply_error(&c->out, h->id, r, error);
    r = agentq_agent_done(s->agentq, id, status ? vhsm_status_to_errno(status) : 0, msg);
    if (r < 0)
        return dispatch_reply_error(&c->out, h->id, r,
                                    "agent-done: no such job (unknown, or already finished: done "
                                    "or timed out)");
    vhsm_buf_begin(&c->out, VHSM_KIND_RESPONSE, VHSM_STATUS_OK, h->id);
    return vhsm_buf_end(&c->out);
}

static int agent_request(Server *s, Conn *c, const VhsmHeader *h, const uint8_t *body,
                         bool resumed) {
    int r;
    if (c->peer.uid != 0) {
        log_uid_notice(c->peer.uid, "Denied %s to uid %u pid %d: not root.",
                       vhsm_opcode_to_string(h->code), (unsigned)c->peer.uid, (int)c->peer.pid);
        r = dispatch_reply_error(&c->out, h->id, -EPERM,
                                 "only root (the nitride agent) may serve the agent channel");
        return r < 0 ? r : 1;
    }
    if (vhsm_body_validate(body, h->body_len) < 0)
        return dispatch_reply_error(&c->out, h->id, -EBADMSG, "malformed TLV body");
    if (h->code == VHSM_OP_AGENT_WAIT)
        r = agent_wait(s, c, h, body, resumed);
    else
        r = agent_done(s, c, h, body);
    return r == -EMSGSIZE ? dispatch_reply_error(&c->out, h->id, r, "reply too large") : r;
}

typedef struct ParkCtx {
    Server *s;
    Conn *c;
} ParkCtx;

static int park_hook(void *userdata, const char *key, int error, char *msg, size_t msg_size) {
    ParkCtx *p = userdata;
    return agentq_park(p->s->agentq, &p->c->aq, key, error, msg, msg_size);
}

/* One request. Returns 0 (answered), 1 (denied), 2 (parked: it stays at the front of the input
 * buffer), or a negative errno (close the connection). */
static int conn_request(Server *s, Conn *c, const VhsmHeader *h, const uint8_t *body) {
    ParkCtx ctx = {.s = s, .c = c};
    DispatchPark park = {.park = park_hook, .userdata = &ctx};
    bool resumed = false;
    int r;

    if (c->park_front) {
        /* The parked request: its outcome is known. */
        char msg[sizeof c->aq.message];
        int outcome = agentq_take_outcome(s->agentq, &c->aq, msg, sizeof msg);
        c->park_front = false;
        atomic_store(&c->parked, false);
        if (outcome == AGENTQ_DROP) {
            log_debug("Parked request of uid %u pid %d dropped: the client went away.",
                      (unsigned)c->peer.uid, (int)c->peer.pid);
            return -ECONNRESET;
        }
        resumed = true;
        if (outcome < 0 && h->code != VHSM_OP_AGENT_WAIT)
            return dispatch_reply_error(&c->out, h->id, outcome, msg) < 0 ? -ENOMEM : 0;
    }
    if (h->code == VHSM_OP_AGENT_WAIT || h->code == VHSM_OP_AGENT_DONE)
        r = agent_request(s, c, h, body, resumed);
    else
        r = dispatch_request_park(s->dispatch, &c->peer, h, body, &c->out,
                                  resumed ? NULL : &park); /* run once more, never park twice */
    if (r == DISPATCH_PARKED) {
        c->park_front = true;
        atomic_store(&c->parked, true);
    }
    return r;
}

/* Answers the complete frames in the input buffer (at least one, more while the turn lasts).
 * Returns 0, 1 if the frame at the front was parked (the connection must be committed or kept,
 * see conn_park), or a negative errno if the connection must be closed (after flushing what was
 * queued). */
static int conn_process(Server *s, Conn *c) {
    bool parked = false;
    size_t off = 0;
    int r = 0;

    /* Stop at the output high-water mark: a client pipelining small requests with large
     * replies (RANDOM) must not make the daemon buffer without bound; the rest waits in the
     * input buffer until the replies are sent (conn_pump). */
    while (c->in_len - off >= VHSM_HEADER_SIZE && c->out.len < CONN_OUT_HIGH &&
           (off == 0 || !conn_turn_over(c))) {
        VhsmHeader h = {0};
        r = vhsm_header_decode(c->in + off, &h);
        if (r == 0 && h.kind != VHSM_KIND_REQUEST)
            r = -EBADMSG;
        if (r < 0) {
            /* The stream cannot be resynchronised: answer once, then close. */
            const char *m = r == -EPROTONOSUPPORT ? "unsupported protocol version"
                            : r == -EMSGSIZE      ? "frame larger than the limit"
                                                  : "bad frame header";
            log_debug("Closing connection of uid %u: %s.", (unsigned)c->peer.uid, m);
            if (dispatch_reply_error(&c->out, r == -EBADMSG ? 0 : h.id, r, m) < 0)
                return -ENOMEM;
            c->close_after_flush = true;
            off = c->in_len;
            break;
        }
        if (c->in_len - off - VHSM_HEADER_SIZE < h.body_len)
            break; /* partial frame: compacted below, conn_grow() makes room as it arrives */
        r = conn_request(s, c, &h, c->in + off + VHSM_HEADER_SIZE);
        if (r < 0)
            return r;
        if (r == DISPATCH_PARKED) {
            parked = true;
            break;
        }
        off += VHSM_HEADER_SIZE + h.body_len;
        if (r > 0 && conn_denied_too_often(c)) {
            /* Answer what was answered, drop the rest, close. */
            c->close_after_flush = true;
            off = c->in_len;
            break;
        }
        /* Send early what is due; a full socket just leaves it queued (sent by conn_pump). */
        if (conn_flush_due(c)) {
            r = conn_flush(c);
            if (r < 0 && r != -EAGAIN)
                return r;
            r = 0;
        }
    }

    if (off > 0) {
        size_t rest = c->in_len - off;
        if (rest > 0)
            memmove(c->in, c->in + off, rest);
        explicit_bzero(c->in + rest, c->in_len - rest);
        c->in_len = rest;
        atomic_store(&c->in_since, rest > 0 ? now_ms() : 0);
    } else if (c->in_len > 0 && atomic_load(&c->in_since) == 0)
        atomic_store(&c->in_since, now_ms());
    if (parked)
        atomic_store(&c->in_since, 0);
    return parked ? 1 : 0;
}

static size_t charge_of(size_t cap) {
    return cap > CONN_BUF_DEFAULT ? cap - CONN_BUF_DEFAULT : 0;
}

/* Re-charges c's input buffer for a capacity of cap. A growth that would take the server over
 * CONN_BUDGET_TOTAL (CONN_BUDGET_TOTAL - CONN_BUDGET_ROOT for a non-root peer), or a non-root
 * uid over CONN_BUDGET_UID, is refused with -EBUSY. */
static int conn_charge(Server *s, Conn *c, size_t cap) {
    size_t want = charge_of(cap);
    LOCK_GUARD(&s->lock);

    if (want > c->charged) {
        size_t more = want - c->charged;
        if (s->charged + more > CONN_BUDGET_TOTAL - (c->peer.uid != 0 ? CONN_BUDGET_ROOT : 0))
            return -EBUSY;
        if (c->peer.uid != 0) {
            size_t uid_charged = 0;
            for (Conn *o = s->conns; o; o = o->next)
                if (o->peer.uid == c->peer.uid)
                    uid_charged += o->charged;
            if (uid_charged + more > CONN_BUDGET_UID)
                return -EBUSY;
        }
    }
    s->charged = s->charged - c->charged + want;
    c->charged = want;
    return 0;
}

/* Makes room to receive more input. The buffer grows only when full, and then to at most
 * twice what has arrived (a frame up to CONN_BUF_UPFRONT gets all of its room at once), never
 * past the frame at its start: memory follows the bytes the peer actually sent, not the length
 * it announced. Returns 0, -EBUSY (a budget is exhausted: refuse the connection) or -ENOMEM. */
/* Replaces c's input buffer with one of want bytes (charged to the budgets). Returns 0, -EBUSY or
 * -ENOMEM; on failure c is unchanged. */
static int conn_realloc(Server *s, Conn *c, size_t want) {
    uint8_t *p;
    int r = conn_charge(s, c, want);
    if (r < 0)
        return r;
    p = malloc(want);
    if (!p) {
        (void)conn_charge(s, c, c->in_cap); /* a shrink back always succeeds */
        return -ENOMEM;
    }
    if (c->in) {
        memcpy(p, c->in, c->in_len);
        explicit_bzero(c->in, c->in_cap);
        free(c->in);
    }
    c->in = p;
    c->in_cap = want;
    return 0;
}

static int conn_grow(Server *s, Conn *c) {
    size_t want = CONN_BUF_DEFAULT;

    if (c->in_len >= VHSM_HEADER_SIZE) {
        VhsmHeader h;
        if (vhsm_header_decode(c->in, &h) == 0 && c->in_len - VHSM_HEADER_SIZE < h.body_len) {
            size_t have = c->in_len - VHSM_HEADER_SIZE, room = MIN(h.body_len, CONN_BUF_UPFRONT);
            if (c->in_len == c->in_cap) /* full: double the body bytes received */
                room = MAX(room, MIN(h.body_len, 2 * have));
            want = MAX(want, VHSM_HEADER_SIZE + room);
        }
    }
    /* A client that keeps its socket full (a read filled the buffer) gets CONN_BUF_STREAM if the
     * budgets allow: fewer reads and compactions per batch. Optional: refused, the default does. */
    if (c->streaming && c->in_cap < CONN_BUF_STREAM && want <= CONN_BUF_STREAM &&
        c->in_len < CONN_BUF_STREAM && conn_realloc(s, c, CONN_BUF_STREAM) == 0)
        return 0;
    if (c->in_cap >= want && c->in_len < c->in_cap)
        return 0;
    if (c->in_len >= want)
        want = c->in_len + CONN_BUF_DEFAULT; /* complete frames held back by the output mark */
    return conn_realloc(s, c, want);
}

/* Refuses a connection whose input buffer cannot grow within the budgets: one busy reply (to
 * the frame at the start of the buffer), the input wiped, then close after the flush. */
static int conn_refuse_busy(Conn *c) {
    VhsmHeader h = {0};
    if (c->in_len >= VHSM_HEADER_SIZE)
        (void)vhsm_header_decode(c->in, &h);
    log_uid_warning(c->peer.uid,
                    "Input memory budget exhausted, refusing a large frame of uid %u pid %d.",
                    (unsigned)c->peer.uid, (int)c->peer.pid);
    explicit_bzero(c->in, c->in_len);
    c->in_len = 0;
    atomic_store(&c->in_since, 0);
    c->close_after_flush = true;
    return dispatch_reply_error(&c->out, h.id, -EBUSY,
                                "input memory budget exhausted (too many large frames in "
                                "flight), try later");
}

/* At the end of a turn: releases a drained input buffer larger than the default (and its
 * charge), so that idle connections hold CONN_BUF_DEFAULT at most. A streaming buffer is kept
 * only while its client keeps the socket full (the turn ended on its limit, not because the
 * socket was drained): an idle connection never pins budget. */
static void conn_shrink(Server *s, Conn *c, bool drained) {
    if (!drained && c->streaming && c->in_len == 0) {
        /* The turn ended on its limit: is anything still coming? */
        uint8_t b;
        ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        drained = n <= 0;
    }
    if (drained)
        c->streaming = false;
    if (c->in_len == 0 && c->in_cap > CONN_BUF_DEFAULT &&
        (!c->streaming || c->in_cap > CONN_BUF_STREAM)) {
        explicit_bzero(c->in, c->in_cap);
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
        (void)conn_charge(s, c, 0);
    }
}

/* After answering, polls the connection for up to spin_us for the client's next request (a
 * synchronous client sends it within microseconds): serving it directly saves the epoll re-arm,
 * the sleep and the wake-up. Yields the CPU between polls so that spinning never takes it from
 * runnable threads. Returns true if input (or EOF) is waiting. */
static bool conn_spin(Server *s, Conn *c) {
    int64_t until;
    /* Only while another worker waits in epoll_wait, free for the other connections: at most
     * threads - 1 workers spin, and one that finds none free (everyone else busy: someone may
     * be waiting) gives the connection back. A client always sending its next request within
     * the window thus keeps a worker only while nobody else needs one (vhsm-batch.sh
     * spinfair); another connection waits at most one window and one request. No turn bound
     * (CONN_TURN_US) on top: it added an epoll hand-off every 2 ms and no fairness. With one
     * worker, never. */
    if (s->cfg.spin_us == 0 || atomic_load(&s->stopping) || atomic_load(&s->idle_workers) == 0)
        return false;
    until = now_us() + s->cfg.spin_us;
    do {
        uint8_t b;
        ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n >= 0 || (errno != EAGAIN && errno != EINTR))
            return true;
        sched_yield();
    } while (now_us() < until);
    return false;
}

/* True if a complete frame (or a header the server must refuse) waits in the input buffer. */
static bool conn_frame_ready(const Conn *c) {
    VhsmHeader h;
    if (c->in_len < VHSM_HEADER_SIZE)
        return false;
    if (vhsm_header_decode(c->in, &h) < 0)
        return true;
    return c->in_len - VHSM_HEADER_SIZE >= h.body_len;
}

/* Sends queued replies, then answers requests still buffered (held back by the high-water
 * mark, or by the end of the previous turn), until nothing is pending. Returns 0, 1 if a request
 * was parked (the caller parks the connection), -EAGAIN if the socket is full (the connection is
 * then armed for EPOLLOUT), -EINPROGRESS if the turn is over with requests still buffered (the
 * caller yields), or another negative errno if it must be closed. */
static int conn_pump(Server *s, Conn *c) {
    for (;;) {
        int r;
        if (c->out_off < c->out.len) {
            r = conn_flush(c);
            if (r == -EAGAIN) {
                if (atomic_load(&c->out_since) == 0)
                    atomic_store(&c->out_since, now_ms());
                /* Waiting on the client may take long: no streaming buffer stays charged. */
                conn_shrink(s, c, true);
                r = conn_arm(s, c, EPOLLOUT);
                return r < 0 ? r : -EAGAIN; /* an arm that failed: the caller closes */
            }
            if (r < 0)
                return r;
            atomic_store(&c->out_since, 0);
        }
        if (c->close_after_flush)
            return -ECONNRESET;
        if (!conn_frame_ready(c))
            return 0;
        if (conn_turn_over(c))
            return -EINPROGRESS;
        r = conn_process(s, c);
        if (r != 0)
            return r;
    }
}

/* One turn of a worker on a connection: reads and answers until the socket is drained (a
 * pipelining client keeps it full: it is served without going back to epoll, which would hand
 * the connection to another worker), or until the turn is over (CONN_TURN_BYTES read or
 * CONN_TURN_US spent): then the connection is re-armed behind the others, with EPOLLOUT too if
 * requests are still buffered (the socket is writable, so that brings it back). Replies go out
 * when due (conn_flush_due) and whenever the socket is drained. */
static void conn_handle(Server *s, Conn *c, uint32_t events) {
    size_t turn = 0;
    bool eof = false, drained = false, pump = true, done = false; /* first send what is pending */
    int r;

    c->turn_end_us = now_us() + CONN_TURN_US;
again:
    for (;;) {
        size_t space;
        ssize_t n;
        if (pump) {
            r = conn_pump(s, c);
            if (r == 1)
                goto park;
            if (r == -EAGAIN)
                return; /* armed for EPOLLOUT */
            if (r == -EINPROGRESS)
                goto yield;
            if (r < 0)
                goto close;
            pump = false;
        }
        if (done)
            break;
        r = conn_grow(s, c);
        if (r == -EBUSY)
            r = conn_refuse_busy(c);
        if (r < 0)
            goto close;
        if (c->close_after_flush) {
            pump = done = true;
            continue;
        }
        space = c->in_cap - c->in_len;
        n = recv(c->fd, c->in + c->in_len, space, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN)
            goto close;
        if (n <= 0) { /* drained, or EOF */
            eof = n == 0;
            drained = true;
            pump = done = true;
            continue;
        }
        c->in_len += (size_t)n;
        turn += (size_t)n;
        c->streaming = c->streaming || ((size_t)n == space && space >= CONN_BUF_DEFAULT);
        r = conn_process(s, c);
        if (r < 0)
            goto close;
        if (r == 1)
            goto park;
        /* A short read emptied the socket (a unix stream recv takes everything queued, up to
         * space): a synchronous client's request. Another recv would only say EAGAIN; whatever
         * arrives meanwhile is seen by the re-arm (EPOLL_CTL_MOD reports a ready socket) or by
         * conn_spin. One syscall less per request. */
        if ((size_t)n < space && !conn_frame_ready(c))
            drained = true;
        done = drained || c->close_after_flush || turn >= CONN_TURN_BYTES || conn_turn_over(c);
        /* Pump (send, and answer what the output mark held back) when the turn ends (every exit
         * of this loop goes through a pump), when a short read drained the socket (then look
         * once more before sleeping), and when replies remain unsent after conn_process's
         * flush or the output mark held frames back: the socket is full, so stop reading and
         * let the backlog wait in the kernel (armed for EPOLLOUT) rather than in the daemon's
         * charged buffers. */
        pump = done || (size_t)n < space || conn_flush_due(c) || conn_frame_ready(c);
    }
    conn_shrink(s, c, drained);
    if (eof || (events & (EPOLLHUP | EPOLLERR)))
        goto close;
    if (conn_spin(s, c)) {
        done = drained = false;
        goto again;
    }
    if (conn_arm(s, c, EPOLLIN) >= 0)
        return;
    goto close;
yield:
    if (conn_arm(s, c, EPOLLIN | EPOLLOUT) >= 0)
        return;
    goto close;
park:
    /* The request at the front waits for the agent. Send the replies of the requests before it
     * (best effort: a full socket keeps them until it is answered), then leave the connection
     * unarmed: the agent queue hands it back (resume_conn). */
    r = conn_flush(c);
    if (r < 0 && r != -EAGAIN)
        goto close;
    if (agentq_commit(s->agentq, &c->aq))
        return;
    /* Its outcome came meanwhile: answer it now. */
    pump = true;
    done = drained = false;
    goto again;
close:
    conn_close(s, c);
}

/* The agent queue hands back a parked connection (its lock held): a worker answers it. */
static void resume_conn(void *userdata, void *conn) {
    Server *s = userdata;
    Conn *c = conn;
    int r = conn_arm(s, c, EPOLLIN | EPOLLOUT);
    if (r < 0)
        log_uid_warning_errno(VLOG_KEY_SERVER, r, "Cannot resume a connection of uid %u: %m",
                              (unsigned)c->peer.uid);
}

static void poke_main(void *userdata) {
    Server *s = userdata;
    uint64_t one = 1;
    (void)!write(s->agent_fd, &one, sizeof one);
}

/* Whether a parked connection's peer hung up: closed its socket (POLLHUP: both directions shut).
 * A half-close (the peer's shutdown(SHUT_WR) after its request, POLLRDHUP only) is a client
 * still waiting for its answer, as for requests that are not parked. */
static bool conn_hung_up(void *userdata, void *conn) {
    Conn *c = conn;
    struct pollfd p = {.fd = c->fd, .events = 0};
    (void)userdata;
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR | POLLNVAL));
}

static void key_event_hook(void *userdata, const char *key, bool verdict) {
    Server *s = userdata;
    agentq_key_event(s->agentq, key, verdict);
}

static void *worker_main(void *userdata) {
    Server *s = userdata;

    for (;;) {
        struct epoll_event ev;
        int n;
        atomic_fetch_add(&s->idle_workers, 1);
        n = epoll_wait(s->work_epoll, &ev, 1, -1);
        atomic_fetch_sub(&s->idle_workers, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            log_error_errno(negative_errno(), "epoll_wait failed in a worker: %m");
            break;
        }
        if (n == 0)
            continue;
        if (!ev.data.ptr)
            break; /* stop */
        conn_handle(s, ev.data.ptr, ev.events);
    }
    return NULL;
}

static unsigned count_uid(Server *s, uid_t uid) {
    unsigned n = 0;
    for (Conn *c = s->conns; c; c = c->next)
        n += c->peer.uid == uid;
    return n;
}

/* Why a new connection of uid is refused, or NULL. Non-root peers, together and per uid, never
 * take the last root_connections slots. s->lock */
static const char *over_limit(Server *s, uid_t uid) {
    if (uid == 0)
        return s->n_conns >= s->cfg.max_connections ? "connection limit" : NULL;
    if (s->n_conns >= s->cfg.max_connections - s->cfg.root_connections)
        return "connection limit for non-root clients";
    if (count_uid(s, uid) >= s->cfg.max_per_uid)
        return "connection limit per uid";
    return NULL;
}

/* Takes the listener out of the main epoll set: accept() cannot succeed for now (no fd or no
 * memory), and the level-triggered listener would wake the main thread at once, forever.
 * conn_close() and the housekeeping tick put it back. */
static void accept_pause(Server *s) {
    LOCK_GUARD(&s->lock);
    if (!s->accept_paused && s->listen_fd >= 0 &&
        epoll_ctl(s->main_epoll, EPOLL_CTL_DEL, s->listen_fd, NULL) == 0)
        s->accept_paused = true;
}

/* s->lock */
static void accept_resume_locked(Server *s) {
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &s->listen_fd};
    if (!s->accept_paused || s->listen_fd < 0)
        return;
    if (epoll_ctl(s->main_epoll, EPOLL_CTL_ADD, s->listen_fd, &ev) == 0 || errno == EEXIST)
        s->accept_paused = false;
}

static void accept_all(Server *s) {
    for (;;) {
        _cleanup_close_ int fd = -EBADF;
        struct ucred cred;
        socklen_t cred_len = sizeof cred;
        const char *why;
        Conn *c;
        Peer peer;
        int r;

        fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            r = negative_errno();
            if (r == -EINTR)
                continue;
            if (r == -EMFILE || r == -ENFILE || r == -ENOBUFS || r == -ENOMEM) {
                log_uid_warning_errno(VLOG_KEY_SERVER, r,
                                      "accept() failed: %m; not accepting until a connection "
                                      "closes (at most 1 s).");
                accept_pause(s);
            } else if (r != -EAGAIN && r != -ECONNABORTED)
                log_uid_warning_errno(VLOG_KEY_SERVER, r, "accept() failed, ignoring: %m");
            return;
        }
        /* The limits first, on SO_PEERCRED alone: a refused peer costs no /proc reads. */
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) < 0 ||
            cred_len != sizeof cred) {
            log_uid_warning_errno(VLOG_KEY_SERVER, negative_errno(),
                                  "Cannot identify a client (SO_PEERCRED), refusing it: %m");
            continue;
        }
        {
            LOCK_GUARD(&s->lock);
            why = over_limit(s, cred.uid);
        }
        if (why) {
            log_uid_warning(cred.uid, "Connection limit reached (%s), refusing uid %u pid %d.", why,
                            (unsigned)cred.uid, (int)cred.pid);
            continue;
        }
        r = peer_identify(fd, !s->cfg.no_peer_pidfd, &peer);
        if (r < 0) {
            log_uid_warning_errno(cred.uid, r,
                                  "Cannot identify a client (SO_PEERCRED), refusing it: %m");
            continue;
        }
        {
            /* Only this thread adds connections: the counts checked above can only have gone
             * down meanwhile. */
            LOCK_GUARD(&s->lock);
            c = calloc(1, sizeof *c);
            if (!c) {
                peer_done(&peer);
                (void)log_oom();
                continue;
            }
            c->fd = TAKE_FD(fd);
            c->peer = peer;
            c->peer.conn_id = atomic_fetch_add(&next_conn_id, 1) + 1;
            c->out = VHSM_BUF_INIT;
            /* Replies are wiped once sent if one of them was secret (dispatch marks decrypt,
             * unwrap and random outputs); ciphertexts and signatures are not. */
            c->out.wipe_if_secret = true;
            c->aq.conn = c;
            c->aq.uid = c->peer.uid;
            c->next = s->conns;
            if (s->conns)
                s->conns->prev = c;
            s->conns = c;
            s->n_conns++;
        }
        log_debug("Connection from uid %u gid %u pid %d cgroup %s%s.", (unsigned)c->peer.uid,
                  (unsigned)c->peer.gid, (int)c->peer.pid, c->peer.cgroup ?: "(unknown)",
                  c->peer.pidfd ? " (pidfd)" : "");
        {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT | EPOLLRDHUP, .data.ptr = c};
            if (epoll_ctl(s->work_epoll, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
                log_warning_errno(negative_errno(), "Cannot watch a connection: %m");
                conn_close(s, c);
            }
        }
    }
}

/* Disconnects clients stalled mid-frame or not reading their replies. */
static void expire_stalled(Server *s) {
    int64_t now = now_ms(), limit = s->cfg.stall_timeout_ms;
    LOCK_GUARD(&s->lock);
    for (Conn *c = s->conns; c; c = c->next) {
        int64_t a = atomic_load(&c->in_since), b = atomic_load(&c->out_since);
        if (atomic_load(&c->parked))
            continue; /* waits for the agent: its peer is checked by agentq_tick() */
        if ((a && now - a > limit) || (b && now - b > limit)) {
            (void)log_uid_full_errno(LOG_INFO, 0, c->peer.uid,
                                     "Disconnecting stalled client uid %u pid %d.",
                                     (unsigned)c->peer.uid, (int)c->peer.pid);
            atomic_store(&c->in_since, 0);
            atomic_store(&c->out_since, 0);
            /* Wakes the owning worker with EOF/HUP; it closes the connection. */
            (void)shutdown(c->fd, SHUT_RDWR);
        }
    }
}

static int epoll_add(int ep, int fd, void *ptr) {
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = ptr};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        return negative_errno();
    return 0;
}

/* True if something accepts connections on path. */
static bool socket_alive(const char *path) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    strcpy(sa.sun_path, path);
    return connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
}

static int listen_on(Server *s) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    _cleanup_free_ char *dir = NULL;
    struct stat st;
    mode_t old;
    char *slash;
    int r;

    if (strlen(s->path) >= sizeof sa.sun_path)
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, s->path);

    dir = strdup(s->path);
    if (!dir)
        return -ENOMEM;
    slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        r = mkdir_p(dir, 0755);
        if (r < 0)
            return r;
    }
    if (lstat(s->path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return -EEXIST; /* never remove something that is not a socket */
        if (socket_alive(s->path))
            return -EADDRINUSE;
        if (unlink(s->path) < 0)
            return negative_errno();
    }

    s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->listen_fd < 0)
        return negative_errno();
    old = umask(0177); /* born 0600, widened below: no window with a wider mode */
    r = bind(s->listen_fd, (struct sockaddr *)&sa, sizeof sa);
    (void)umask(old);
    if (r < 0)
        return negative_errno();
    if (s->cfg.socket_gid != (gid_t)-1 && chown(s->path, (uid_t)-1, s->cfg.socket_gid) < 0)
        return negative_errno();
    if (chmod(s->path, s->cfg.socket_mode) < 0)
        return negative_errno();
    if (stat(s->path, &st) < 0)
        return negative_errno();
    s->sock_dev = st.st_dev;
    s->sock_ino = st.st_ino;
    if (listen(s->listen_fd, SOMAXCONN) < 0)
        return negative_errno();
    return 0;
}

static void unlink_socket(Server *s) {
    struct stat st;
    if (!s->path || s->sock_ino == 0)
        return;
    if (lstat(s->path, &st) == 0 && st.st_dev == s->sock_dev && st.st_ino == s->sock_ino)
        (void)unlink(s->path);
    s->sock_ino = 0;
}

/* Every connection is a file descriptor: keeps max_connections below RLIMIT_NOFILE, less what the
 * daemon needs for itself, so that accept() does not run out of descriptors before the
 * connection limit refuses anyone (issue 8: 8 uids x 128 connections against the default soft
 * limit of 1024 made accept() fail with EMFILE, and locked root out). Keeps room for root. */
static void clamp_to_fd_limit(ServerConfig *cfg) {
    struct rlimit rl;
    unsigned long long reserve =
        FD_RESERVE_BASE + (unsigned long long)FD_RESERVE_PER_WORKER * cfg->threads;
    unsigned long long budget;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
        return;
    budget = rl.rlim_cur > reserve + 2 ? rl.rlim_cur - reserve : 2;
    if (cfg->max_connections > budget) {
        log_warning("Connection limit lowered from %u to %llu: the open-file limit "
                    "(RLIMIT_NOFILE) is %llu, of which %llu are kept for the daemon itself.",
                    cfg->max_connections, budget, (unsigned long long)rl.rlim_cur, reserve);
        cfg->max_connections = (unsigned)budget;
    }
    if (cfg->root_connections >= cfg->max_connections) {
        log_warning("Connections reserved for root lowered from %u to %u (connection limit %u).",
                    cfg->root_connections, cfg->max_connections / 2, cfg->max_connections);
        cfg->root_connections = cfg->max_connections / 2;
    }
}

int server_new(const ServerConfig *cfg, Dispatch *dispatch, Server **ret) {
    _cleanup_(server_freep) Server *s = NULL;
    struct itimerspec its = {.it_interval = {.tv_sec = 1}, .it_value = {.tv_sec = 1}};
    long ncpu;
    int r;

    if (!cfg->socket_path || !dispatch)
        return -EINVAL;
    s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->listen_fd = s->main_epoll = s->work_epoll = s->stop_fd = s->wake_fd = s->timer_fd =
        s->agent_fd = -EBADF;
    (void)pthread_mutex_init(&s->lock, NULL);
    atomic_init(&s->stopping, false);
    s->cfg = *cfg;
    s->dispatch = dispatch;
    ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (s->cfg.threads == 0)
        s->cfg.threads = ncpu > 0 ? (unsigned)ncpu : 1;
    if (s->cfg.threads > 256)
        return -EINVAL;
    if (s->cfg.max_connections == 0)
        s->cfg.max_connections = 1024;
    if (s->cfg.max_per_uid == 0)
        s->cfg.max_per_uid = 128;
    if (s->cfg.root_connections == 0)
        s->cfg.root_connections = 16;
    clamp_to_fd_limit(&s->cfg);
    if (s->cfg.stall_timeout_ms == 0)
        s->cfg.stall_timeout_ms = 10000;
    if (s->cfg.agent_timeout_s == 0)
        s->cfg.agent_timeout_s = 30;
    r = agentq_new(s->cfg.agent_timeout_s, resume_conn, poke_main, s, &s->agentq);
    if (r < 0)
        return r;
    dispatch_set_key_event(dispatch, key_event_hook, s);
    s->path = strdup(cfg->socket_path);
    if (!s->path)
        return -ENOMEM;

    s->main_epoll = epoll_create1(EPOLL_CLOEXEC);
    s->work_epoll = epoll_create1(EPOLL_CLOEXEC);
    s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    s->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    s->agent_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->main_epoll < 0 || s->work_epoll < 0 || s->stop_fd < 0 || s->wake_fd < 0 ||
        s->timer_fd < 0 || s->agent_fd < 0)
        return negative_errno();
    if (timerfd_settime(s->timer_fd, 0, &its, NULL) < 0)
        return negative_errno();

    r = listen_on(s);
    if (r < 0)
        return r;
    if ((r = epoll_add(s->main_epoll, s->listen_fd, &s->listen_fd)) < 0 ||
        (r = epoll_add(s->main_epoll, s->wake_fd, &s->wake_fd)) < 0 ||
        (r = epoll_add(s->main_epoll, s->timer_fd, &s->timer_fd)) < 0 ||
        (r = epoll_add(s->main_epoll, s->agent_fd, &s->agent_fd)) < 0 ||
        (r = epoll_add(s->work_epoll, s->stop_fd, NULL)) < 0)
        return r;
    *ret = TAKE_PTR(s);
    return 0;
}

void server_request_stop(Server *s) {
    uint64_t one = 1;
    int saved = errno;
    atomic_store(&s->stopping, true);
    (void)!write(s->wake_fd, &one, sizeof one);
    errno = saved;
}

static int start_workers(Server *s) {
    sigset_t all, old;
    int r = 0;

    s->workers = calloc(s->cfg.threads, sizeof *s->workers);
    if (!s->workers)
        return -ENOMEM;
    /* Workers block every signal: SIGTERM/SIGINT go to the main thread. */
    (void)sigfillset(&all);
    (void)pthread_sigmask(SIG_BLOCK, &all, &old);
    for (unsigned i = 0; i < s->cfg.threads; i++) {
        r = -pthread_create(&s->workers[i], NULL, worker_main, s);
        if (r < 0)
            break;
        s->n_workers++;
    }
    (void)pthread_sigmask(SIG_SETMASK, &old, NULL);
    return r;
}

static void stop_workers(Server *s) {
    uint64_t one = 1;
    (void)!write(s->stop_fd, &one, sizeof one); /* level-triggered: every worker sees it */
    for (unsigned i = 0; i < s->n_workers; i++)
        (void)pthread_join(s->workers[i], NULL);
    s->n_workers = 0;
}

int server_run(Server *s) {
    int r;

    r = start_workers(s);
    if (r < 0) {
        stop_workers(s);
        return r;
    }
    log_info("Listening on %s with %u worker threads.", s->path, s->cfg.threads);

    while (!atomic_load(&s->stopping)) {
        struct epoll_event evs[4];
        /* Agent channel deadlines (jobs, agents' waits) between the ticks. */
        int64_t next = agentq_tick(s->agentq, now_ms(), NULL);
        int n = epoll_wait(s->main_epoll, evs, (int)ELEMENTSOF(evs),
                           next < 0 ? -1 : (int)MIN(next + 1, (int64_t)1000));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = log_error_errno(negative_errno(), "epoll_wait failed: %m");
            break;
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == &s->listen_fd)
                accept_all(s);
            else if (evs[i].data.ptr == &s->agent_fd) {
                uint64_t v;
                (void)!read(s->agent_fd, &v, sizeof v);
            } else if (evs[i].data.ptr == &s->timer_fd) {
                uint64_t ticks;
                (void)!read(s->timer_fd, &ticks, sizeof ticks);
                expire_stalled(s);
                (void)agentq_tick(s->agentq, now_ms(), conn_hung_up);
                {
                    LOCK_GUARD(&s->lock);
                    accept_resume_locked(s);
                }
                vlog_tick();
            }
        }
    }

    log_info("Shutting down: no new connections, finishing requests in flight.");
    {
        LOCK_GUARD(&s->lock); /* workers look at listen_fd in conn_close */
        (void)epoll_ctl(s->main_epoll, EPOLL_CTL_DEL, s->listen_fd, NULL);
        (void)close(s->listen_fd);
        s->listen_fd = -EBADF;
        s->accept_paused = false;
    }
    unlink_socket(s);
    stop_workers(s);
    /* Workers are gone: flush what is still queued (best effort) and close everything. */
    while (s->conns) {
        Conn *c = s->conns;
        (void)conn_flush(c);
        conn_close(s, c);
    }
    return r < 0 ? r : 0;
}

Server *server_free(Server *s) {
    if (!s)
        return NULL;
    if (s->n_workers > 0)
        stop_workers(s);
    s->agentq = agentq_free(s->agentq); /* it points into the connections: first */
    while (s->conns) {
        Conn *c = s->conns;
        s->conns = c->next;
        conn_free(c);
    }
    if (s->listen_fd >= 0)
        (void)close(s->listen_fd);
    unlink_socket(s);
    for (int *fd = (int[]){s->main_epoll, s->work_epoll, s->stop_fd, s->wake_fd, s->timer_fd,
                           s->agent_fd, -1};
         *fd != -1; fd++)
        if (*fd >= 0)
            (void)close(*fd);
    free(s->workers);
    free(s->path);
    (void)pthread_mutex_destroy(&s->lock);
    free(s);
    return NULL;
}
