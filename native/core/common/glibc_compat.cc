// Two symbols that GCC 12's libstdc++ headers make every object reference, defined here so the addon
// does not import them: the prebuild then loads with libstdc++ from GCC 6 on and glibc from 2.17 on,
// not only on the toolchain it was built with.
#include <new>
#include <stdexcept>

#if defined(__linux__) && defined(__GLIBC__)
// glibc >= 2.32 sets this to 1 while a process has one thread, letting libstdc++ skip atomic reference
// counting. Never claiming single-threadedness is always correct, just a little slower.
extern "C" {
__attribute__((visibility("hidden"))) char __libc_single_threaded = 0;
}
#endif

namespace std {
// Thrown by allocators for impossible sizes; in libstdc++ only since GCC 11 (GLIBCXX_3.4.29). Where the
// system's libstdc++ has it, the dynamic linker may pick that one instead: both throw the same.
void __throw_bad_array_new_length() {
  throw std::bad_array_new_length();
}
}  // namespace std
