// Gives the CUDA plugin the addon's glibc floor (2.17; scripts/abi-requirements.js checks both). glibc
// 2.34 moved libpthread, libdl and librt into libc under the new version GLIBC_2.34, so a plugin linked
// here would ask for that version for ~45 functions (mostly from the static CUDA runtime) and would not
// load on Ubuntu 20.04, Debian 11, RHEL 8 or Amazon Linux 2. Every glibc still exports each function under
// its original version, so each name below is defined here, hidden, as a jump to that original: the
// runtime's calls bind to it at link time, and the arguments pass through untouched whatever the
// signature. The link keeps libpthread.so.0, libdl.so.2 and librt.so.1 as needed libraries, where older
// glibcs define these (newer ones keep them as empty stubs). x86-64 only, like the plugin.
#if defined(__linux__) && defined(__x86_64__)

#define XNORM_OLD_VERSION(name, version)                  \
  __asm__(".symver xnorm_glibc_" #name ", " #name "@" version "\n" \
          ".globl " #name "\n"                             \
          ".hidden " #name "\n"                            \
          ".type " #name ", @function\n"                   \
          #name ":\n"                                      \
          "  jmp xnorm_glibc_" #name "@PLT\n"              \
          ".size " #name ", . - " #name "\n");

#define XNORM_OLD(name) XNORM_OLD_VERSION(name, "GLIBC_2.2.5")

// libdl
XNORM_OLD(dlopen) XNORM_OLD(dlclose) XNORM_OLD(dlsym) XNORM_OLD(dlvsym) XNORM_OLD(dlerror)
XNORM_OLD_VERSION(dlmopen, "GLIBC_2.3.4")
// libpthread
XNORM_OLD(pthread_create) XNORM_OLD(pthread_detach) XNORM_OLD(pthread_join) XNORM_OLD(pthread_kill)
XNORM_OLD(pthread_once) XNORM_OLD(pthread_key_create) XNORM_OLD(pthread_key_delete)
XNORM_OLD(pthread_getspecific) XNORM_OLD(pthread_setspecific) XNORM_OLD(pthread_mutex_trylock)
XNORM_OLD(pthread_mutexattr_init) XNORM_OLD(pthread_mutexattr_destroy) XNORM_OLD(pthread_mutexattr_settype)
XNORM_OLD(pthread_mutexattr_setpshared) XNORM_OLD(pthread_condattr_setpshared)
XNORM_OLD(pthread_rwlock_init) XNORM_OLD(pthread_rwlock_destroy) XNORM_OLD(pthread_rwlock_rdlock)
XNORM_OLD(pthread_rwlock_tryrdlock) XNORM_OLD(pthread_rwlock_timedrdlock) XNORM_OLD(pthread_rwlock_wrlock)
XNORM_OLD(pthread_rwlock_trywrlock) XNORM_OLD(pthread_rwlock_timedwrlock) XNORM_OLD(pthread_rwlock_unlock)
XNORM_OLD(pthread_rwlockattr_init) XNORM_OLD(pthread_rwlockattr_destroy) XNORM_OLD(pthread_rwlockattr_setpshared)
XNORM_OLD(pthread_spin_init) XNORM_OLD(pthread_spin_destroy) XNORM_OLD(pthread_spin_lock)
XNORM_OLD(pthread_spin_trylock) XNORM_OLD(pthread_spin_unlock)
XNORM_OLD(sem_init) XNORM_OLD(sem_destroy) XNORM_OLD(sem_post) XNORM_OLD(sem_wait) XNORM_OLD(sem_trywait)
XNORM_OLD(sem_timedwait)
// librt
XNORM_OLD(shm_open) XNORM_OLD(shm_unlink)

#endif
