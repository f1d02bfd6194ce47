#pragma once

#include <string>

namespace sluice::server {

struct ValidateOptions {
  std::string config_path;  // --config; empty: none
  std::string manifests;    // --manifests; empty: the config's `manifests:` if any
  bool json = false;        // --json: one JSON document on stdout instead of text
};

// `sluice validate`: a one-shot check of a router config file and/or a manifest directory.
// Prints every error (field paths; file:line for each manifest document), every warning,
// the documents skipped (kinds Sluice does not use) and the objects left to other controllers,
// then each object's status and a summary whose counts add up. Returns the exit code: 0 when
// nothing is wrong, 1 otherwise.
int validate(const ValidateOptions& options);

}  // namespace sluice::server
