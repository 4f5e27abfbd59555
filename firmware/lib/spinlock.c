/* Test-and-test-and-set spinlock (xchg is locked implicitly). */
#include "fw.h"

void spin_lock(struct spinlock *l)
{
    while (xchg32(&l->locked, 1)) {
        while (l->locked)
            cpu_relax();
    }
}

void spin_unlock(struct spinlock *l)
{
    barrier();
    l->locked = 0;
}
