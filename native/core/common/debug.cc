#include "debug.h"

#include <unistd.h>

#include <cstdlib>
#include <mutex>
#include <set>

namespace xnorm {

bool debug_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("XNORM_DEBUG");
    if (!v) return false;
    const std::string s(v);
    return !(s.empty() || s == "0" || s == "false");
  }();
  return on;
}

void debug_log(const std::string& message) {
  const std::string line = "[xnorm] " + message + "\n";
  ssize_t ignored = write(2, line.data(), line.size());
  (void)ignored;
}

bool debug_first(const std::string& key) {
  static std::mutex* mutex = new std::mutex();  // never destroyed: kernels may log during exit
  static std::set<std::string>* seen = new std::set<std::string>();
  std::lock_guard<std::mutex> lock(*mutex);
  return seen->insert(key).second;
}

}  // namespace xnorm
