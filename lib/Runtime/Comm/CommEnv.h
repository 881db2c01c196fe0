//===- CommEnv.h - settings every communicator reads ------------*- C++ -*-===//

#ifndef DS_LIB_RUNTIME_COMM_COMMENV_H
#define DS_LIB_RUNTIME_COMM_COMMENV_H

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

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

} // namespace comm
} // namespace dsrt

#endif // DS_LIB_RUNTIME_COMM_COMMENV_H
