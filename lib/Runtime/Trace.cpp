//===- Trace.cpp - DS_TRACE: a Chrome trace of the run -------------------===//

#include "Trace.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

namespace dsrt {
namespace trace {

namespace {

struct Event {
  const char *name, *category;
  double start, end;
  int64_t tokens;
};

struct State {
  std::mutex lock;
  std::vector<Event> events;
};

State &state() {
  static State s;
  return s;
}

const char *file() {
  static const char *path = [] {
    const char *p = std::getenv("DS_TRACE");
    return p && *p ? p : nullptr;
  }();
  return path;
}

/// s as a JSON string body (names are literals; escape anyway).
std::string escaped(const char *s) {
  std::string out;
  for (; *s; ++s) {
    if (*s == '"' || *s == '\\')
      out += '\\';
    out += *s;
  }
  return out;
}

} // namespace

bool enabled() { return file() != nullptr; }

double nowUs() {
  return std::chrono::duration<double, std::micro>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void record(const char *name, const char *category, double startUs,
            double endUs, int64_t tokens) {
  State &s = state();
  std::lock_guard<std::mutex> guard(s.lock);
  s.events.push_back({name, category, startUs, endUs, tokens});
}

bool write(size_t *count, std::string *error) {
  State &s = state();
  std::lock_guard<std::mutex> guard(s.lock);
  const std::string path = file(), tmp = path + ".tmp";
  std::FILE *f = std::fopen(tmp.c_str(), "w");
  if (!f) {
    *error = "DS_TRACE: cannot write " + path + ": " + std::strerror(errno);
    return false;
  }
  // In start order (a span is recorded when it ends, after those inside
  // it), times from the first, so the viewer starts at zero.
  std::stable_sort(
      s.events.begin(), s.events.end(),
      [](const Event &a, const Event &b) { return a.start < b.start; });
  const double origin = s.events.empty() ? 0 : s.events.front().start;
  std::fprintf(f, "{\"traceEvents\": [");
  for (size_t i = 0; i < s.events.size(); ++i) {
    const Event &e = s.events[i];
    std::fprintf(f,
                 "%s\n{\"name\": \"%s\", \"cat\": \"%s\", \"ph\": \"X\", "
                 "\"ts\": %.3f, \"dur\": %.3f, \"pid\": 0, \"tid\": 0",
                 i ? "," : "", escaped(e.name).c_str(),
                 escaped(e.category).c_str(), e.start - origin,
                 e.end - e.start);
    if (e.tokens >= 0)
      std::fprintf(f, ", \"args\": {\"tokens\": %lld}", (long long)e.tokens);
    std::fprintf(f, "}");
  }
  std::fprintf(f, "\n], \"displayTimeUnit\": \"ms\"}\n");
  const bool ok = !std::ferror(f);
  if (std::fclose(f) != 0 || !ok ||
      std::rename(tmp.c_str(), path.c_str()) != 0) {
    *error = "DS_TRACE: cannot write " + path + ": " + std::strerror(errno);
    std::remove(tmp.c_str());
    return false;
  }
  *count = s.events.size();
  return true;
}

} // namespace trace
} // namespace dsrt
