/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The C client SDK of libimmudb: every ImmuService call of an immudb server
 * (immudb-api.md sections 1-3), and the *verified* calls, which check every
 * proof the server returns against a locally kept trusted state
 * (immudb-crypto.md sections 3-8, "the spec" below).
 *
 * Trust model
 *   The client keeps, per (server identity, database), the last state it
 *   verified: {db, txId, Alh(txId), signature}. A verified call sends
 *   proveSinceTx = that txId and accepts the answer only if
 *     - the Alh of every returned tx header is recomputed (header version 0
 *       and 1, spec 3) and the returned entries hash to the header's Eh
 *       (entry digest of the header's version, spec 2 and 4);
 *     - the entry the caller wrote or read is proven in that tx (htree
 *       inclusion, spec 4.3) with exactly the bytes the caller expects;
 *     - the dual proof (spec 6.4, with the CVE-2022-36111 linear-advance
 *       check) links the trusted state and the new one;
 *     - when a server signing key is configured, the server's signature of
 *       the new state verifies (spec 8).
 *   Only then is the new state stored (never moving a database's state to
 *   an older tx). The first state of a database is the server's
 *   CurrentState (trust on first use); with a signing key configured its
 *   signature must verify.
 *
 *   What each verified call proves, beyond the official clients:
 *     immu_client_verified_get of a key that is a reference also proves the
 *       referenced value: after proving the reference entry it issues a
 *       second VerifiableGet of the referenced key at the tx the value came
 *       from, proves it the same way and requires the same key, tx and
 *       value (and, for a bound reference, tx == the reference's atTx).
 *     immu_client_verified_tx_by_id checks every returned entry against the
 *       tx's Eh, so the entries it hands back are proven too.
 *     Every verified call recomputes Eh from the returned entries.
 *   Not provable with immudb's proofs (as in every immudb client): that a
 *   value is the *latest* one of its key, revision numbers, and the
 *   "expired" flag; these are reported as the server sent them.
 *
 * Server identity (CVE-2022-39199)
 *   The state is kept under the server's identity: the SHA-256 of the
 *   configured signing public key, otherwise the immudb-uuid response
 *   header. Per address (host:port) the client pins the first immudb-uuid
 *   it sees and the key it was configured with; a later difference is an
 *   IMMU_EVERIFY error naming both values, never a fresh empty state. Every
 *   response's immudb-uuid is compared with the pinned one. If a server was
 *   legitimately replaced, delete its identity file in the state directory.
 *
 * State directory (options.state_dir)
 *   identity-<hash of host:port>   pinned identity of an address
 *   state-<server id>              trusted states, one line per database
 *   state-<server id>.lock         flock(2) lock held during a verified call
 *   Files are replaced atomically (temp file, fsync, rename, fsync of the
 *   directory) and carry a SHA-256 checksum; a damaged file is an
 *   IMMU_ECORRUPT error, never treated as missing. Several processes may
 *   share a directory: a verified call holds the lock file of its server
 *   for its whole duration, so the states they store form one verified
 *   chain. Without a state directory, states live in the handle only.
 *
 * Conventions
 *   - Every fallible function returns 0 or a negative code (immudb/err.h).
 *     After a failure immu_client_last_error() names the problem, including
 *     the server's gRPC status and message when there was one.
 *   - Server errors map to codes as follows: NOT_FOUND, or UNKNOWN with
 *     "not found" in the message -> IMMU_ENOTFOUND; ALREADY_EXISTS or
 *     "already exists" -> IMMU_EEXIST; INVALID_ARGUMENT -> IMMU_EINVAL;
 *     OUT_OF_RANGE -> IMMU_ERANGE; PERMISSION_DENIED -> IMMU_EPERM;
 *     UNAUTHENTICATED -> IMMU_EAUTH; DEADLINE_EXCEEDED -> IMMU_ETIMEOUT;
 *     UNAVAILABLE -> IMMU_ECLOSED; RESOURCE_EXHAUSTED -> IMMU_ETOOLARGE;
 *     UNIMPLEMENTED -> IMMU_EUNSUPPORTED; FAILED_PRECONDITION, ABORTED ->
 *     IMMU_ECONFLICT; DATA_LOSS -> IMMU_ECORRUPT; anything else (UNKNOWN,
 *     INTERNAL, ...) -> IMMU_EPROTO. immu_client_last_grpc_status() gives
 *     the exact status. Transport failures: IMMU_ETIMEOUT, IMMU_ECLOSED,
 *     IMMU_EPROTO, IMMU_ETOOLARGE or -errno (see src/client/grpc_client.h).
 *   - IMMU_EVERIFY always means the server's answer failed verification
 *     (or its identity changed); the trusted state is left unchanged.
 *   - Inputs are borrowed for the duration of the call. Result structs are
 *     supplied by the caller (any content: they are overwritten) and own
 *     heap memory on success, released with the matching *_clear()
 *     function; on failure they hold nothing to release (clearing them is
 *     still safe). *_clear() accepts zeroed structs and leaves them zeroed.
 *   - Request structs are those of the KV layer (immudb/db.h): they mirror
 *     the proto messages field for field (KeyRequest, ScanRequest, ...).
 *   - Thread-safety: a handle may be used by any number of threads at once.
 *     Calls are multiplexed on one HTTP/2 connection (reconnected on the
 *     next call after it fails). Verified calls of one handle run one at a
 *     time (they share the trusted state). Changing the session, token or
 *     database while other threads run calls affects the calls started
 *     afterwards.
 *   - Nothing a server sends makes the library abort or crash.
 */
#ifndef IMMUDB_CLIENT_H
#define IMMUDB_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "immudb/crypto.h"
#include "immudb/db.h"
#include "immudb/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct immu_client immu_client;

/* ------------------------------------------------------------------ */
/* Handle                                                              */
/* ------------------------------------------------------------------ */

typedef struct immu_client_options {
  const char *address; /* host name or IP literal; NULL = "127.0.0.1" */
  int port;            /* 0 = 3322 */
  /* TLS: with tls == 0 the connection is cleartext HTTP/2 (h2c). */
  int tls;
  const char *ca_file;      /* PEM bundle; NULL = system trust store */
  const char *cert_file;    /* client certificate (mTLS), PEM, or NULL */
  const char *key_file;     /* its private key, PEM; needed with cert_file */
  const char *server_name;  /* SNI / name check; NULL = address */
  int insecure_skip_verify; /* 1 = accept any server certificate (tests) */
  /* The server's state-signing public key, a PEM "PUBLIC KEY" (PKIX, P-256)
   * file; NULL = signatures are not checked. */
  const char *server_signing_pubkey;
  /* Directory of the trusted states (created 0700 if missing); NULL = keep
   * them in the handle only (trust on first use for every new handle). */
  const char *state_dir;
  int connect_timeout_ms;    /* TCP + TLS + HTTP/2 setup; 0 = 10 s */
  int64_t call_timeout_ms;   /* deadline of every call; 0 = none */
  size_t max_recv_msg_size;  /* per response message; 0 = 64 MiB */
  /* Database of the handle: selected by immu_client_login (UseDatabase)
   * and used by immu_client_open_session when it is given NULL. NULL =
   * "defaultdb" (and login selects nothing). */
  const char *database;
  /* Period of the background KeepAlive while a session is open; 0 = 60 s,
   * negative = no background keepalive. */
  int keepalive_ms;
} immu_client_options;

/* Fills |o| with the defaults (all zero / NULL). */
void immu_client_options_init(immu_client_options *o);

/* Creates a handle and connects to the server. Strings of |opt| are
 * copied. Caller owns *out: free with immu_client_free(). On failure *out
 * is NULL. Returns 0, or:
 *   IMMU_EINVAL    |opt| or |out| NULL, a bad port, cert_file without
 *                  key_file, a database name that is too long
 *   IMMU_ECRYPTO   the signing key file or TLS files cannot be loaded
 *   IMMU_ENOMEM    out of memory
 *   and the connection errors of the transport (IMMU_ENOTFOUND for a name
 *   that does not resolve, IMMU_ETIMEOUT, IMMU_EAUTH for a server
 *   certificate that does not verify, IMMU_EPROTO, -ECONNREFUSED, ...).
 * Thread-safe (independent handles). */
int immu_client_new(const immu_client_options *opt, immu_client **out);

/* Stops the keepalive thread, closes the connection and frees the handle.
 * Does not log out or close the session (call those first if wanted).
 * NULL allowed. No other call may be running on |c|. */
void immu_client_free(immu_client *c);

/* Message describing the last failed immu_client_* call of the calling
 * thread (thread-local; never NULL; "" if none failed yet). Valid until the
 * next immu_client_* call on this thread. */
const char *immu_client_last_error(void);

/* gRPC status of the last immu_client_* call of the calling thread that
 * reached the server (0 = OK), or -1 if it never got a status. */
int immu_client_last_grpc_status(void);

/* Copies the name of the handle's current database into |buf| (capacity
 * |cap|, NUL-terminated, truncated if needed). Thread-safe. */
void immu_client_current_database(immu_client *c, char *buf, size_t cap);

/* ------------------------------------------------------------------ */
/* Authentication and sessions (immudb-api.md section 3)               */
/* ------------------------------------------------------------------ */

/* Login{user, password}: stores the returned token; later calls send
 * "authorization: Bearer <token>" (unless a session is open). The current
 * database becomes "defaultdb" (what a login token is bound to), or, when
 * options.database was given, that database through UseDatabase (whose
 * errors are then returned). On a server with several databases or users a
 * login token has no database: call immu_client_use_database.
 * Returns 0, IMMU_EAUTH (wrong credentials), IMMU_EINVAL, or a transport /
 * server error. Thread-safe. */
int immu_client_login(immu_client *c, const char *user, const char *password);

/* Logout: tells the server and forgets the token. Returns 0 or an error
 * (the token is forgotten either way). */
int immu_client_logout(immu_client *c);

/* Copies the handle's login token (from Login or UseDatabase, or installed
 * with immu_client_set_token), NUL-terminated, into |buf| (capacity |cap|),
 * e.g. to save it between runs of a CLI. The token is a credential: store
 * it like a password. Returns 0, IMMU_ENOTFOUND (no token), IMMU_ETOOLARGE
 * (|cap| too small) or IMMU_EINVAL. Thread-safe. */
int immu_client_token(immu_client *c, char *buf, size_t cap);

/* Installs a saved token (replacing any; later calls send it as after
 * Login) and makes |database| the current database (NULL = keep), without
 * a server call. Returns 0, IMMU_EINVAL (empty token or one with bytes
 * outside 0x20..0x7e, invalid database name) or IMMU_ENOMEM. Thread-safe. */
int immu_client_set_token(immu_client *c, const char *token,
                          const char *database);

/* OpenSession{username, password, databaseName}: later calls send
 * "sessionid: <id>" (which takes precedence over a token); the current
 * database becomes |database| (NULL = the current one). The server UUID the
 * reply carries is checked against the pinned identity (IMMU_EVERIFY on a
 * difference). Starts the background KeepAlive (options.keepalive_ms).
 * Returns 0, IMMU_EAUTH, IMMU_EBUSY (a session is already open on this
 * handle), IMMU_EVERIFY, or a transport / server error. */
int immu_client_open_session(immu_client *c, const char *user,
                             const char *password, const char *database);

/* CloseSession: stops the keepalive and forgets the session id (also when
 * the server call fails). Returns 0, IMMU_EINVAL (no session), or an
 * error. */
int immu_client_close_session(immu_client *c);

/* KeepAlive of the open session. Returns 0, IMMU_EINVAL (no session), or a
 * transport / server error. */
int immu_client_keepalive(immu_client *c);

/* UseDatabase{name}: with a token, replaces it with the returned one; with
 * a session the server switches the session's database. The current
 * database becomes |name|. Returns 0, IMMU_EINVAL (empty or too long
 * name), or a server error (e.g. IMMU_EINVAL / IMMU_EPERM). */
int immu_client_use_database(immu_client *c, const char *name);

/* ------------------------------------------------------------------ */
/* Result types                                                        */
/* ------------------------------------------------------------------ */

/* KV metadata (spec 2.3); all zero when the entry has none. */
typedef struct immu_client_kv_md {
  int deleted;
  int has_expiration;
  int64_t expires_at; /* Unix seconds */
  int non_indexable;
} immu_client_kv_md;

typedef struct immu_client_reference {
  uint64_t tx;  /* tx that wrote the reference */
  uint8_t *key; /* the reference's user key (owned) */
  size_t key_len;
  uint64_t at_tx; /* 0 = unbound */
  uint64_t revision;
  immu_client_kv_md md;
} immu_client_reference;

typedef struct immu_client_entry {
  uint64_t tx;  /* tx that wrote the value (0 for stream_get) */
  uint8_t *key; /* user key (owned; never NULL after success) */
  size_t key_len;
  uint8_t *value; /* user value (owned; never NULL after success) */
  size_t value_len;
  int has_referenced_by; /* the key read was a reference to |key| */
  immu_client_reference referenced_by;
  uint64_t revision; /* as reported by the server (not proven) */
  int expired;       /* as reported by the server (not proven) */
  immu_client_kv_md md;
} immu_client_entry;

void immu_client_entry_clear(immu_client_entry *e);

typedef struct immu_client_entries {
  immu_client_entry *v;
  size_t n;
} immu_client_entries;

void immu_client_entries_clear(immu_client_entries *l);

typedef struct immu_client_zentry {
  uint8_t *set; /* owned */
  size_t set_len;
  uint8_t *key; /* member's user key (owned) */
  size_t key_len;
  immu_client_entry entry;
  double score;
  uint64_t at_tx;
} immu_client_zentry;

typedef struct immu_client_zentries {
  immu_client_zentry *v;
  size_t n;
} immu_client_zentries;

void immu_client_zentries_clear(immu_client_zentries *l);

/* A raw store entry of a tx (TxEntry). */
typedef struct immu_client_tx_entry {
  uint8_t *key; /* store key WITH its KV prefix (0x00 plain/ref, 0x01 zset,
                   0x02 SQL); owned */
  size_t key_len;
  immu_client_kv_md md;
  immu_digest hval; /* H(stored value) */
  uint32_t vlen;    /* as reported (not hashed by immudb) */
  int has_value;    /* the server sent the stored value (and, in verified
                       calls, it hashes to hval) */
  uint8_t *value;   /* stored value WITH its prefix; owned, or NULL */
  size_t value_len;
} immu_client_tx_entry;

typedef struct immu_client_tx {
  immu_tx_header header;
  immu_digest alh; /* Alh of header, computed locally */
  immu_client_tx_entry *entries;
  size_t nentries;
} immu_client_tx;

void immu_client_tx_clear(immu_client_tx *tx);

typedef struct immu_client_tx_list {
  immu_client_tx *v;
  size_t n;
} immu_client_tx_list;

void immu_client_tx_list_clear(immu_client_tx_list *l);

/* ImmutableState{db, txId, txHash, signature}. */
typedef struct immu_client_state {
  char db[IMMU_DB_NAME_MAX + 1];
  uint64_t tx_id;
  immu_digest tx_hash;
  uint8_t signature[IMMU_SIG_MAX]; /* DER; signature_len 0 = none */
  size_t signature_len;
} immu_client_state;

/* ------------------------------------------------------------------ */
/* Health, server info, state                                          */
/* ------------------------------------------------------------------ */

/* Health: *status (may be NULL) = the server's status flag; its version
 * string is copied into |version| (capacity |cap|, may be NULL / 0). Needs
 * no login. Also pins the server identity (immudb-uuid). */
int immu_client_health(immu_client *c, int *status, char *version,
                       size_t cap);

typedef struct immu_client_info {
  char version[128];
  int64_t started_at;
  int64_t num_transactions;
  int32_t num_databases;
  int64_t databases_disk_size;
} immu_client_info;

/* ServerInfo. Needs no login. */
int immu_client_server_info(immu_client *c, immu_client_info *out);

/* CurrentState of the current database, as the server reports it. With a
 * signing key configured the signature must verify (IMMU_EVERIFY
 * otherwise); the state is not proven consistent with the trusted state
 * (use a verified call for that) and is not stored. */
int immu_client_current_state(immu_client *c, immu_client_state *out);

/* The locally trusted state of the current database (no server call).
 * Returns 0, IMMU_ENOTFOUND (no verified call on this database yet),
 * IMMU_ECORRUPT (damaged state file), or -errno. */
int immu_client_trusted_state(immu_client *c, immu_client_state *out);

/* ------------------------------------------------------------------ */
/* Plain KV calls (not verified)                                       */
/* ------------------------------------------------------------------ */

/* Unless stated otherwise, every call below needs a login or a session
 * (and, on a server with several databases, a selected database), returns
 * 0 or the codes listed under "Conventions" at the top of this file, and
 * is thread-safe. Results are as the server reports them: NOT verified.
 * Headers written to *hdr are parsed strictly (32-byte digests, version 0
 * or 1; IMMU_EPROTO otherwise) and their Alh is computable, but they are
 * not proven against the trusted state. */

/* Set of one key (SetRequest with one KeyValue). *hdr (may be NULL) gets
 * the committed tx header. IMMU_EINVAL for an empty key. */
int immu_client_set(immu_client *c, const uint8_t *key, size_t klen,
                    const uint8_t *value, size_t vlen, immu_tx_header *hdr);

/* SetAll: the |n| >= 1 KVs in one tx, in order. |no_wait| = do not wait
 * for the index. IMMU_EINVAL for n == 0, an empty key or a NULL value with
 * a length. */
int immu_client_set_all(immu_client *c, const immu_db_kv *kvs, size_t n,
                        int no_wait, immu_tx_header *hdr);

/* Get: latest value, or the one selected by req->at_tx / since_tx /
 * at_revision. References are resolved by the server (out->has_referenced_by
 * then describes the reference). *out: caller owns, immu_client_entry_clear.
 * IMMU_ENOTFOUND when the key (version) does not exist. */
int immu_client_get(immu_client *c, const immu_db_key_req *req,
                    immu_client_entry *out);

/* GetAll: the latest value of every existing key among |keys| (missing ones
 * are skipped). *out: caller owns, immu_client_entries_clear. */
int immu_client_get_all(immu_client *c, const immu_buf *keys, size_t n,
                        uint64_t since_tx, immu_client_entries *out);

/* Delete (logical, immudb >= 1.2) of |n| >= 1 keys. Our server refuses it
 * (header version 0 cannot carry the deleted flag): IMMU_EUNSUPPORTED or
 * IMMU_EINVAL then. */
int immu_client_delete(immu_client *c, const immu_buf *keys, size_t n,
                       uint64_t since_tx, int no_wait, immu_tx_header *hdr);

/* ExecAll: |n| >= 1 operations (KV, ZAdd, Ref) atomically in one tx.
 * IMMU_EINVAL for an unknown op kind. */
int immu_client_exec_all(immu_client *c, const immu_db_op *ops, size_t n,
                         int no_wait, immu_tx_header *hdr);

/* Scan of the plain key space within the bounds of |req| (references
 * resolved). *out: caller owns, immu_client_entries_clear. */
int immu_client_scan(immu_client *c, const immu_db_scan_req *req,
                     immu_client_entries *out);

/* History: versions of req->key (references not resolved). *out: caller
 * owns, immu_client_entries_clear. IMMU_ENOTFOUND if the key never
 * existed. */
int immu_client_history(immu_client *c, const immu_db_history_req *req,
                        immu_client_entries *out);

/* Count: keys starting with |prefix| (plen may be 0); CountAll: all keys.
 * *out may be NULL. */
int immu_client_count(immu_client *c, const uint8_t *prefix, size_t plen,
                      uint64_t *out);
int immu_client_count_all(immu_client *c, uint64_t *out);

/* TxById / TxScan. The returned entries are checked against the header's
 * Eh (IMMU_EVERIFY if they do not match) and out->alh is computed, but the
 * header is not proven against the trusted state: use
 * immu_client_verified_tx_by_id for that. *out: caller owns,
 * immu_client_tx_clear / immu_client_tx_list_clear. IMMU_EINVAL for id 0;
 * IMMU_ENOTFOUND for a tx that does not exist. */
int immu_client_tx_by_id(immu_client *c, uint64_t id, immu_client_tx *out);
int immu_client_tx_scan(immu_client *c, const immu_db_tx_scan_req *req,
                        immu_client_tx_list *out);

/* SetReference: req->key -> req->referenced_key (at_tx with bound_ref).
 * IMMU_EINVAL for empty keys. */
int immu_client_set_reference(immu_client *c, const immu_db_ref_req *req,
                              immu_tx_header *hdr);
/* ZAdd of req->key with req->score to req->set. IMMU_EINVAL for an empty
 * set or key. */
int immu_client_zadd(immu_client *c, const immu_db_zadd_req *req,
                     immu_tx_header *hdr);
/* ZScan of req->set. *out: caller owns, immu_client_zentries_clear. */
int immu_client_zscan(immu_client *c, const immu_db_zscan_req *req,
                      immu_client_zentries *out);

/* ------------------------------------------------------------------ */
/* Streams (values larger than one gRPC message)                       */
/* ------------------------------------------------------------------ */

/* streamSet: the |n| KVs as framed messages (8-byte big-endian length +
 * payload; key then value per KV) cut into Chunk messages of at most
 * 64 KiB. *hdr as immu_client_set. */
int immu_client_stream_set(immu_client *c, const immu_db_kv *kvs, size_t n,
                           immu_tx_header *hdr);

/* streamGet: the key and value the server streams back (out->tx is 0: the
 * stream does not carry it). Values up to 64 MiB; IMMU_EPROTO when the
 * stream is not exactly two framed messages. */
int immu_client_stream_get(immu_client *c, const immu_db_key_req *req,
                           immu_client_entry *out);

/* ------------------------------------------------------------------ */
/* Verified calls                                                      */
/* ------------------------------------------------------------------ */

/* VerifiableSet of |n| >= 1 KVs: requires the returned tx to hold exactly
 * these entries in order (key 0x00||k, H(0x00||v), no KV metadata), its Eh
 * to match them, the tx to be newer than the trusted state, the dual proof
 * from the trusted state (or from the tx itself on first use) and the
 * signature when a key is configured. *hdr (may be NULL) gets the proven
 * header. Returns 0, IMMU_EVERIFY, IMMU_ECORRUPT (state file), or the
 * errors of immu_client_set. */
int immu_client_verified_set(immu_client *c, const immu_db_kv *kvs, size_t n,
                             immu_tx_header *hdr);

/* VerifiableGet of req->key (at_tx / since_tx / at_revision as in Get):
 * proves the entry's inclusion in its tx, that tx's header against the
 * trusted state (dual proof in whichever direction) and the signature.
 * For a reference, the referenced value is proven with a second
 * VerifiableGet (see the top of this file). With req->at_tx > 0 the entry
 * must come from that tx. On success *out holds the proven entry. */
int immu_client_verified_get(immu_client *c, const immu_db_key_req *req,
                             immu_client_entry *out);
/* Shorthands of immu_client_verified_get. */
int immu_client_verified_get_at(immu_client *c, const uint8_t *key,
                                size_t klen, uint64_t at_tx,
                                immu_client_entry *out);
int immu_client_verified_get_since(immu_client *c, const uint8_t *key,
                                   size_t klen, uint64_t since_tx,
                                   immu_client_entry *out);

/* VerifiableSetReference: as verified_set with the single entry
 * key 0x00||req->key, value 0x01||u64(at_tx)||0x00||req->referenced_key. */
int immu_client_verified_set_reference(immu_client *c,
                                       const immu_db_ref_req *req,
                                       immu_tx_header *hdr);

/* VerifiableZAdd: as verified_set with the single ZAdd entry (spec 7.2). */
int immu_client_verified_zadd(immu_client *c, const immu_db_zadd_req *req,
                              immu_tx_header *hdr);

/* VerifiableTxById: proves tx |id|'s header against the trusted state and
 * every returned entry against its Eh; *out (may be NULL) gets the proven
 * tx. */
int immu_client_verified_tx_by_id(immu_client *c, uint64_t id,
                                  immu_client_tx *out);

/* ------------------------------------------------------------------ */
/* Databases                                                           */
/* ------------------------------------------------------------------ */

/* A subset of DatabaseNullableSettings; a field is sent when its has_ flag
 * is set. */
typedef struct immu_client_db_settings {
  int has_file_size;
  uint32_t file_size;
  int has_max_key_len;
  uint32_t max_key_len;
  int has_max_value_len;
  uint32_t max_value_len;
  int has_max_tx_entries;
  uint32_t max_tx_entries;
  int has_exclude_commit_time;
  int exclude_commit_time;
  int has_write_tx_header_version;
  uint32_t write_tx_header_version;
  int has_autoload;
  int autoload;
} immu_client_db_settings;

typedef struct immu_client_db_info {
  char *name; /* owned */
  int loaded;
  uint64_t disk_size;
  uint64_t num_transactions;
  uint64_t created_at;
  char *created_by; /* owned; "" when not reported */
} immu_client_db_info;

typedef struct immu_client_db_list {
  immu_client_db_info *v;
  size_t n;
} immu_client_db_list;

void immu_client_db_list_clear(immu_client_db_list *l);

/* Database administration (needs the rights immudb-api.md section 3
 * lists: sysadmin to create, admin for the index calls). Names must be 1 to
 * IMMU_DB_NAME_MAX bytes (IMMU_EINVAL otherwise). Thread-safe; results are
 * the server's word (not verifiable). */

/* CreateDatabase (deprecated RPC) / CreateDatabaseV2 with optional
 * |settings| (may be NULL). With |if_not_exists|, an existing database is
 * not an error and *already_existed (may be NULL) tells. IMMU_EEXIST /
 * IMMU_EINVAL when it exists (server wording decides). */
int immu_client_create_database(immu_client *c, const char *name);
int immu_client_create_database_v2(immu_client *c, const char *name,
                                   const immu_client_db_settings *settings,
                                   int if_not_exists, int *already_existed);
/* DatabaseList (names only; the other fields zero / "") and DatabaseListV2
 * (with details). *out: caller owns, immu_client_db_list_clear. */
int immu_client_database_list(immu_client *c, immu_client_db_list *out);
int immu_client_database_list_v2(immu_client *c, immu_client_db_list *out);
/* LoadDatabase / UnloadDatabase / DeleteDatabase (which needs the database
 * unloaded first). */
int immu_client_load_database(immu_client *c, const char *name);
int immu_client_unload_database(immu_client *c, const char *name);
int immu_client_delete_database(immu_client *c, const char *name);
/* FlushIndex{cleanupPercentage, synced} / CompactIndex of the current
 * database. */
int immu_client_flush_index(immu_client *c, float cleanup_percentage,
                            int synced);
int immu_client_compact_index(immu_client *c);

/* ------------------------------------------------------------------ */
/* Users                                                               */
/* ------------------------------------------------------------------ */

#define IMMU_PERM_READ 1u
#define IMMU_PERM_READWRITE 2u
#define IMMU_PERM_ADMIN 254u
#define IMMU_PERM_SYSADMIN 255u

enum immu_client_perm_action { IMMU_PERM_GRANT = 0, IMMU_PERM_REVOKE = 1 };

typedef struct immu_client_permission {
  char *database; /* owned */
  uint32_t permission;
} immu_client_permission;

typedef struct immu_client_user {
  char *user; /* owned */
  immu_client_permission *perms;
  size_t nperms;
  char *created_by; /* owned */
  char *created_at; /* owned */
  int active;
} immu_client_user;

typedef struct immu_client_user_list {
  immu_client_user *v;
  size_t n;
} immu_client_user_list;

void immu_client_user_list_clear(immu_client_user_list *l);

/* User administration (admin or sysadmin rights; immudb-api.md section 3).
 * Strings are borrowed; NULL ones are IMMU_EINVAL. Thread-safe. */

/* CreateUser{user, password, permission (IMMU_PERM_*), database}. The
 * server enforces its password policy (IMMU_EINVAL) and IMMU_EEXIST / an
 * error for an existing user. */
int immu_client_create_user(immu_client *c, const char *user,
                            const char *password, uint32_t permission,
                            const char *database);
/* ListUsers. *out: caller owns, immu_client_user_list_clear. */
int immu_client_list_users(immu_client *c, immu_client_user_list *out);
/* ChangePassword of |user| (|old_password| is checked by the server). */
int immu_client_change_password(immu_client *c, const char *user,
                                const char *old_password,
                                const char *new_password);
/* ChangePermission: |action| is enum immu_client_perm_action; IMMU_EINVAL
 * for another value. */
int immu_client_change_permission(immu_client *c, int action,
                                  const char *user, const char *database,
                                  uint32_t permission);
/* SetActiveUser: enables (|active| != 0) or disables |user|. */
int immu_client_set_active_user(immu_client *c, const char *user, int active);

#ifdef __cplusplus
}
#endif

#endif /* IMMUDB_CLIENT_H */
