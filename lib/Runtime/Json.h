//===- Json.h - libdsrt's strict JSON reader --------------------*- C++ -*-===//
//
// A small strict JSON parser for untrusted input (safetensors headers, index
// files, request files): RFC 8259 except that numbers must be integers that
// fit in int64, nesting is bounded (16 levels, no deeper recursion) and an
// object may not repeat a key. No exceptions; errors say what and at which
// byte ("expected ',' or '}' at byte 12").
//
//===----------------------------------------------------------------------===//

#ifndef DS_LIB_RUNTIME_JSON_H
#define DS_LIB_RUNTIME_JSON_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace dsrt {

/// A parsed JSON value (integers only; see parseJson).
struct Json {
  enum Kind { Null, Bool, Int, String, Array, Object };
  Kind kind = Null;
  bool boolean = false;
  int64_t integer = 0;
  std::string string;
  std::vector<Json> items;       // Array elements, or Object values
  std::vector<std::string> keys; // Object keys, parallel to items

  const Json *get(const char *key) const {
    for (size_t i = 0; i < keys.size(); ++i)
      if (keys[i] == key)
        return &items[i];
    return nullptr;
  }
};

/// Parses one JSON document of `size` bytes at `text`, followed only by
/// whitespace. On failure returns false and sets `error` (without a prefix).
bool parseJson(const char *text, size_t size, Json *out, std::string *error);

/// `s` as a JSON string literal (quotes, escapes for '"', '\\' and control
/// characters; other bytes as they are).
std::string jsonQuote(const std::string &s);

} // namespace dsrt

#endif // DS_LIB_RUNTIME_JSON_H
