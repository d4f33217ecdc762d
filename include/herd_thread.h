/* herd_thread: how a helper thread doing bulk background work is scheduled.
 *
 * The log's writer and the journal's compactor write or copy what the node
 * thread produced; nothing waits on them within a turn. Run as SCHED_BATCH
 * (Linux), such a thread keeps its fair share of the CPU (its nice value is
 * unchanged), but its wake-ups do not preempt the thread that is running:
 * on a machine whose cores are busy, the node thread (and whatever serves
 * the clients) is not interrupted each time a buffer arrives for the
 * writer. Where the call fails or the policy is unknown, the thread runs as
 * any other; nothing else depends on it. */
#ifndef HERD_THREAD_H
#define HERD_THREAD_H

#include <sched.h>

static inline void herd_thread_background(void)
{
#ifdef SCHED_BATCH
    struct sched_param param = {.sched_priority = 0};
    (void) sched_setscheduler(0, SCHED_BATCH, &param); /* 0: the calling thread */
#endif
}

#endif
