/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The latest-row cache (rcache.h). Each shard is a chained hash table
 * with a list through the same rows in insertion order; the top bits of a
 * row's hash pick its shard, the low bits its bucket. Eviction is second
 * chance (CLOCK) from the oldest end: a hit only marks its row, because
 * moving it to the front touched its two neighbours, two more cache misses
 * on a read (a third of a cached Get's cost in the profile).
 */
#include "store/rcache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "core/mem.h"
#include "immudb/err.h"

#define SHARD_BITS 6
#define NSHARDS (1u << SHARD_BITS)
#define FIRST_BUCKETS 64
/* Buckets are sized up front for the rows of this many bytes a shard can
 * hold, and kept at least twice the rows: a lookup of a key not held (every
 * new key an apply writes) then mostly reads one empty bucket instead of a
 * rehash and a chain walk, each a cache miss (the apply's put cost 0.8 us
 * a key with one bucket per row and doubling from 64). */
#define ROW_GUESS 512

typedef struct row {
  struct row *hnext;       /* bucket chain */
  struct row *prev, *next; /* head: the newest, or last given a chance */
  uint64_t owner, hash;
  uint32_t klen, vlen;
  int ref; /* read since it was inserted or last passed over */
  uint8_t data[]; /* key, then the row */
} row;

typedef struct shard {
  pthread_mutex_t mu;
  row **tab;
  size_t nb; /* buckets, a power of two */
  size_t n;
  size_t bytes, cap;
  row *head, *tail;
  uint64_t hits, misses;
} shard;

struct immu__rcache {
  shard sh[NSHARDS];
  size_t capacity;
  _Atomic uint64_t next_owner;
  _Atomic uint64_t drops; /* see immu__rcache_drops */
};

static uint64_t mix(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

static uint64_t hash_key(uint64_t owner, const uint8_t *k, size_t n) {
  uint64_t h = mix(owner ^ ((uint64_t)n << 48));
  uint64_t w;
  while (n >= 8) {
    memcpy(&w, k, 8);
    h = (h ^ mix(w)) * 0x9e3779b97f4a7c15ULL;
    h ^= h >> 29;
    k += 8;
    n -= 8;
  }
  w = 0;
  memcpy(&w, k, n);
  return mix(h ^ w);
}

static size_t row_bytes(size_t klen, size_t vlen) {
  return sizeof(row) + klen + vlen;
}

int immu__rcache_new(size_t capacity, immu__rcache **out) {
  immu__rcache *c = immu__calloc(1, sizeof *c);
  *out = NULL;
  if (c == NULL)
    return IMMU_ENOMEM;
  c->capacity = capacity;
  atomic_init(&c->next_owner, 1);
  atomic_init(&c->drops, 0);
  for (unsigned i = 0; i < NSHARDS; i++) {
    shard *s = &c->sh[i];
    pthread_mutex_init(&s->mu, NULL);
    s->cap = capacity / NSHARDS;
    if (s->cap > 0) {
      size_t nb = FIRST_BUCKETS;
      while (nb < s->cap / ROW_GUESS)
        nb *= 2;
      s->tab = immu__calloc(nb, sizeof *s->tab);
      if (s->tab != NULL)
        s->nb = nb; /* else grown on the first put */
    }
  }
  *out = c;
  return 0;
}

void immu__rcache_free(immu__rcache *c) {
  if (c == NULL)
    return;
  for (unsigned i = 0; i < NSHARDS; i++) {
    shard *s = &c->sh[i];
    row *r = s->head;
    while (r != NULL) {
      row *nx = r->next;
      immu__free(r);
      r = nx;
    }
    immu__free(s->tab);
    pthread_mutex_destroy(&s->mu);
  }
  immu__free(c);
}

uint64_t immu__rcache_owner(immu__rcache *c) {
  return atomic_fetch_add(&c->next_owner, 1);
}

static shard *shard_of(immu__rcache *c, uint64_t h) {
  return &c->sh[h >> (64 - SHARD_BITS)];
}

static void list_unlink(shard *s, row *r) {
  if (r->prev)
    r->prev->next = r->next;
  else
    s->head = r->next;
  if (r->next)
    r->next->prev = r->prev;
  else
    s->tail = r->prev;
  r->prev = r->next = NULL;
}

static void list_push(shard *s, row *r) {
  r->prev = NULL;
  r->next = s->head;
  if (s->head)
    s->head->prev = r;
  else
    s->tail = r;
  s->head = r;
}

/* The link that points at the matching row, or at the chain's NULL end. */
static row **find(shard *s, uint64_t owner, uint64_t h, const uint8_t *k,
                  size_t kl) {
  row **pp;
  if (s->nb == 0)
    return NULL;
  pp = &s->tab[h & (s->nb - 1)];
  while (*pp != NULL) {
    row *r = *pp;
    if (r->hash == h && r->owner == owner && r->klen == kl &&
        memcmp(r->data, k, kl) == 0)
      return pp;
    pp = &r->hnext;
  }
  return pp;
}

/* Unlinks the row |*pp| (|pp| its bucket link) from its bucket and the
 * list and frees it. */
static void remove_at(shard *s, row **pp) {
  row *r = *pp;
  *pp = r->hnext;
  list_unlink(s, r);
  s->n--;
  s->bytes -= row_bytes(r->klen, r->vlen);
  immu__free(r);
}

static void remove_row(shard *s, row *r) {
  row **pp = &s->tab[r->hash & (s->nb - 1)];
  while (*pp != r)
    pp = &(*pp)->hnext;
  remove_at(s, pp);
}

/* Doubles the bucket array; on allocation failure the chains just grow. */
static void grow(shard *s) {
  size_t nb = s->nb ? s->nb * 2 : FIRST_BUCKETS;
  row **t = immu__calloc(nb, sizeof *t);
  if (t == NULL)
    return;
  for (size_t i = 0; i < s->nb; i++) {
    row *r = s->tab[i];
    while (r != NULL) {
      row *nx = r->hnext;
      r->hnext = t[r->hash & (nb - 1)];
      t[r->hash & (nb - 1)] = r;
      r = nx;
    }
  }
  immu__free(s->tab);
  s->tab = t;
  s->nb = nb;
}

void immu__rcache_put(immu__rcache *c, uint64_t owner, const uint8_t *key,
                      size_t klen, const uint8_t *v, size_t vlen) {
  uint64_t h;
  shard *s;
  row **pp, *r = NULL;
  size_t need;

  if (c == NULL || c->capacity == 0)
    return;
  h = hash_key(owner, key, klen);
  s = shard_of(c, h);
  /* Allocate outside the lock; a row that cannot be stored still evicts
   * the held one below. */
  need = 0;
  if (v != NULL && klen <= s->cap && vlen <= s->cap && klen <= UINT32_MAX &&
      vlen <= UINT32_MAX) {
    need = row_bytes(klen, vlen);
    if (need <= s->cap)
      r = immu__malloc(need);
  }
  if (r != NULL) {
    r->hnext = r->prev = r->next = NULL;
    r->ref = 0;
    r->owner = owner;
    r->hash = h;
    r->klen = (uint32_t)klen;
    r->vlen = (uint32_t)vlen;
    memcpy(r->data, key, klen);
    if (vlen > 0)
      memcpy(r->data + klen, v, vlen);
  }

  pthread_mutex_lock(&s->mu);
  pp = find(s, owner, h, key, klen);
  if (pp != NULL && *pp != NULL)
    remove_at(s, pp);
  if (r == NULL) {
    /* not stored (erase, too large, no memory) */
    atomic_fetch_add_explicit(&c->drops, 1, memory_order_relaxed);
  } else {
    if (2 * s->n >= s->nb)
      grow(s);
    if (s->nb == 0) {
      immu__free(r); /* no table: nothing held, nothing stale */
      atomic_fetch_add_explicit(&c->drops, 1, memory_order_relaxed);
    } else {
      size_t b = h & (s->nb - 1);
      r->hnext = s->tab[b];
      s->tab[b] = r;
      list_push(s, r);
      s->n++;
      s->bytes += need;
      /* Each pass either evicts a row or spends one row's mark. */
      while (s->bytes > s->cap && s->tail != NULL && s->tail != r) {
        row *t = s->tail;
        if (t->ref) {
          t->ref = 0;
          list_unlink(s, t);
          list_push(s, t);
        } else {
          remove_row(s, t);
          atomic_fetch_add_explicit(&c->drops, 1, memory_order_relaxed);
        }
      }
    }
  }
  pthread_mutex_unlock(&s->mu);
}

void immu__rcache_erase(immu__rcache *c, uint64_t owner, const uint8_t *key,
                        size_t klen) {
  immu__rcache_put(c, owner, key, klen, NULL, 0);
}

int immu__rcache_get(immu__rcache *c, uint64_t owner, const uint8_t *key,
                     size_t klen,
                     int (*fn)(const uint8_t *row, size_t len, void *arg),
                     void *arg) {
  uint64_t h;
  shard *s;
  row **pp;
  int rc;

  if (c == NULL || c->capacity == 0)
    return IMMU_ENOTFOUND;
  h = hash_key(owner, key, klen);
  s = shard_of(c, h);
  pthread_mutex_lock(&s->mu);
  pp = find(s, owner, h, key, klen);
  if (pp == NULL || *pp == NULL) {
    s->misses++;
    pthread_mutex_unlock(&s->mu);
    return IMMU_ENOTFOUND;
  }
  s->hits++;
  {
    row *r = *pp;
    r->ref = 1;
    rc = fn(r->data + r->klen, r->vlen, arg);
  }
  pthread_mutex_unlock(&s->mu);
  return rc;
}

uint64_t immu__rcache_drops(immu__rcache *c) {
  if (c == NULL || c->capacity == 0)
    return UINT64_MAX;
  return atomic_load_explicit(&c->drops, memory_order_relaxed);
}

void immu__rcache_drop_owner(immu__rcache *c, uint64_t owner) {
  if (c == NULL || c->capacity == 0)
    return;
  for (unsigned i = 0; i < NSHARDS; i++) {
    shard *s = &c->sh[i];
    pthread_mutex_lock(&s->mu);
    row *r = s->head;
    while (r != NULL) {
      row *nx = r->next;
      if (r->owner == owner)
        remove_row(s, r);
      r = nx;
    }
    pthread_mutex_unlock(&s->mu);
  }
}

void immu__rcache_get_stats(immu__rcache *c, immu__rcache_stats *out) {
  memset(out, 0, sizeof *out);
  if (c == NULL)
    return;
  out->capacity = c->capacity;
  for (unsigned i = 0; i < NSHARDS; i++) {
    shard *s = &c->sh[i];
    pthread_mutex_lock(&s->mu);
    out->hits += s->hits;
    out->misses += s->misses;
    out->rows += s->n;
    out->bytes += s->bytes;
    pthread_mutex_unlock(&s->mu);
  }
}
