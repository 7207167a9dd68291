// Binds the libc functions that glibc 2.34 moved from libdl/libpthread into libc (and libm's expf, given
// a new version in 2.27) to their original symbol versions, which every glibc still provides, so the prebuilt addon keeps loading on older
// distributions (see scripts/abi-requirements.js). Include it before any use of these functions.
// aarch64's oldest symbol versions are GLIBC_2.17 (its first glibc), so there the same functions are
// pinned to 2.17.
#pragma once

#if defined(__linux__) && defined(__GLIBC__) && defined(__x86_64__)
__asm__(".symver dlopen,dlopen@GLIBC_2.2.5");
__asm__(".symver dlsym,dlsym@GLIBC_2.2.5");
__asm__(".symver dlerror,dlerror@GLIBC_2.2.5");
__asm__(".symver dladdr,dladdr@GLIBC_2.2.5");
__asm__(".symver pthread_once,pthread_once@GLIBC_2.2.5");
// glibc 2.27 added faster expf (and logf, powf...) under a new version; the old one stays exported.
__asm__(".symver expf,expf@GLIBC_2.2.5");
#elif defined(__linux__) && defined(__GLIBC__) && defined(__aarch64__)
__asm__(".symver dlopen,dlopen@GLIBC_2.17");
__asm__(".symver dlsym,dlsym@GLIBC_2.17");
__asm__(".symver dlerror,dlerror@GLIBC_2.17");
__asm__(".symver dladdr,dladdr@GLIBC_2.17");
__asm__(".symver pthread_once,pthread_once@GLIBC_2.17");
__asm__(".symver expf,expf@GLIBC_2.17");
#endif
