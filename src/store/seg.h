/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A segmented append-only file: a directory of files named
 * %020llu.<ext> (the segment number, from 0), each at most |seg_size| bytes
 * unless a single append is larger than a whole segment (then that append
 * gets a segment of its own, as large as it needs).
 *
 * Positions are logical: IMMU_SEGPOS(seg, off) = seg << 40 | off. An append
 * never straddles two segments: if it does not fit in the rest of the
 * current one, it starts the next.
 *
 * Thread-safety: one appender at a time (the caller serialises append,
 * truncate and sync); any number of concurrent readers, which may read any
 * position below the last append that returned. Descriptors are opened once
 * and kept until immu__seg_close.
 */
#ifndef IMMU_STORE_SEG_H
#define IMMU_STORE_SEG_H

#include <stdint.h>
#include <sys/uio.h>

#include "store/io.h"

#define IMMU_SEG_OFF_BITS 40
#define IMMU_SEGPOS(seg, off) ((uint64_t)(seg) << IMMU_SEG_OFF_BITS | (uint64_t)(off))
#define IMMU_SEGPOS_SEG(pos) ((uint64_t)(pos) >> IMMU_SEG_OFF_BITS)
#define IMMU_SEGPOS_OFF(pos) ((uint64_t)(pos) & (((uint64_t)1 << IMMU_SEG_OFF_BITS) - 1))

typedef struct immu_seg immu_seg;

/* Opens (creating the directory if |create|) the segment set in |dir| with
 * file extension |ext| (e.g. "log"). Segments must be numbered 0..N-1 with
 * no gap (IMMU_ECORRUPT otherwise, naming the missing file in the log
 * message). The end position is the end of the last segment.
 * Caller owns *out (immu__seg_close). */
int immu__seg_open(const immu_io *io, const char *dir, const char *ext,
                   uint64_t seg_size, int create, immu_seg **out);
void immu__seg_close(immu_seg *s);

/* Logical position one past the last byte written. */
uint64_t immu__seg_end(const immu_seg *s);

/* Appends the |iovcnt| buffers (total |len| bytes) contiguously; *pos gets
 * the logical position of the first byte. On error nothing is considered
 * appended: the segment is truncated back to its previous end (if that
 * fails too, IMMU_EPOISONED from then on). */
int immu__seg_append(immu_seg *s, const struct iovec *iov, int iovcnt,
                     uint64_t *pos);

/* Turns zero-fill preallocation (SPEC SEG-9) on or off for later appends.
 * With it on, the last segment's file may hold zeros past the end; a
 * later open counts them in the end, and the caller (the log's recovery)
 * must find the true end and truncate there. Appender side. */
void immu__seg_set_prealloc(immu_seg *s, int on);

/* Reads |n| bytes at logical position |pos|. IMMU_ERANGE if the range is
 * not entirely inside one segment's written bytes. */
int immu__seg_read(const immu_seg *s, uint64_t pos, void *buf, size_t n);

/* fdatasync of every segment written since the last sync. */
int immu__seg_sync(immu_seg *s);

/* fdatasync of every segment holding bytes in [from, to) (logical
 * positions). Unlike immu__seg_sync it may run concurrently with the
 * appender and with other calls of itself (the commit path overlaps the
 * fsyncs of successive groups); it does not reset the appender's dirty
 * tracking. A failure poisons the set. */
int immu__seg_sync_upto(immu_seg *s, uint64_t from, uint64_t to);

/* Drops every byte at and after logical position |pos| (removing later
 * segments), then syncs. Used by recovery. */
int immu__seg_truncate(immu_seg *s, uint64_t pos);

/* Size in bytes of segment number |seg|; IMMU_ERANGE if there is no such
 * segment. Safe against a concurrent appender. */
int immu__seg_size(const immu_seg *s, uint64_t seg, uint64_t *size);

/* Total bytes on disk over all segments, and the number of segments. */
uint64_t immu__seg_bytes(const immu_seg *s);
uint64_t immu__seg_count(const immu_seg *s);

/* Path of the file holding logical position |pos|, for error messages;
 * writes at most |cap| bytes including the NUL. */
void immu__seg_path(const immu_seg *s, uint64_t pos, char *buf, size_t cap);

#endif
