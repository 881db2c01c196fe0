//===- CommEnv.h - settings every communicator reads ------------*- C++ -*-===//

#ifndef DS_LIB_RUNTIME_COMM_COMMENV_H
#define DS_LIB_RUNTIME_COMM_COMMENV_H

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sched.h>
#include <string>
#include <thread>

namespace dsrt {
namespace comm {

inline bool fail(std::string *error, const std::string &message) {
  if (error)
    *error = message;
  return false;
}

/// Seconds without a trailing ".0" (300, 0.5).
inline std::string formatSeconds(double s) {
  char buffer[32];
  if (s == std::floor(s) && s < 1e15)
    std::snprintf(buffer, sizeof(buffer), "%.0f", s);
  else
    std::snprintf(buffer, sizeof(buffer), "%g", s);
  return buffer;
}

/// DS_COMM_TIMEOUT: positive, finite seconds; default 300.
inline bool parseTimeout(double *seconds, std::string *error) {
  *seconds = 300;
  const char *text = std::getenv("DS_COMM_TIMEOUT");
  if (!text)
    return true;
  char *end = nullptr;
  double value = std::strtod(text, &end);
  if (!*text || end == text || *end != '\0' || !std::isfinite(value) ||
      value <= 0)
    return fail(error, std::string("DS_COMM_TIMEOUT='") + text +
                           "' is not a positive number of seconds");
  *seconds = value;
  return true;
}

/// Between polls of something a peer must finish: spin first (latency),
/// then yield, then sleep a little (a peer still computing).
inline void backOff(uint64_t iteration,
                    std::chrono::steady_clock::time_point start) {
  if (iteration < 256)
    return;
  if (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(20))
    sched_yield();
  else
    std::this_thread::sleep_for(std::chrono::microseconds(200));
}

} // namespace comm
} // namespace dsrt

#endif // DS_LIB_RUNTIME_COMM_COMMENV_H
