/// @file core/registry.h
/// @brief A registry of named factories: the one template behind the solver registry
///        (solvers/registry.h) and the PSLD sampler registry (psld/sampler.h).
///
/// An entry is the product's traits (any struct with a `name`) and a factory that builds the product
/// from checked `Options`. Entries keep their registration order (listings, typed tests and benchmarks
/// follow it); a name registered twice is a logic error; an unknown name is a ValueError that lists the
/// registered names. Built-in entries come from one list in the area's registry source; entries from a
/// higher layer are added by a static `add` in their own source file, so the lower layer never includes
/// them (architecture.md, "Adding things").
#pragma once

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "fewstep/core/check.h"
#include "fewstep/core/options.h"

namespace fewstep {

template <typename Product, typename Traits>
class Registry {
 public:
  using Factory = std::function<std::shared_ptr<const Product>(const Options&)>;
  struct Entry {
    Traits traits;
    Factory make;
  };

  /// `what` names the products in messages ("solver", "psld sampler").
  Registry(std::string what, std::vector<Entry> entries) : what_(std::move(what)) {
    for (auto& e : entries) add(std::move(e));
  }

  /// Appends an entry; std::logic_error if its name is taken.
  void add(Entry entry) {
    for (const auto& e : entries_)
      if (e.traits.name == entry.traits.name)
        throw std::logic_error(what_ + " name '" + entry.traits.name + "' is registered twice");
    entries_.push_back(std::move(entry));
  }

  const std::vector<Entry>& entries() const { return entries_; }

  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(entries_.size());
    for (const auto& e : entries_) out.push_back(e.traits.name);
    return out;
  }

  /// The entry named `name`; ValueError listing the registered names otherwise.
  const Entry& find(const std::string& name) const {
    for (const auto& e : entries_)
      if (e.traits.name == name) return e;
    std::string known;
    for (const auto& e : entries_) known += (known.empty() ? "" : ", ") + e.traits.name;
    FEWSTEP_CHECK_VALUE(false, "unknown ", what_, " '", name, "'; registered ", what_, "s: ", known);
    throw std::logic_error("unreachable");
  }

  bool contains(const std::string& name) const {
    for (const auto& e : entries_)
      if (e.traits.name == name) return true;
    return false;
  }

  /// Builds the named product with its options (each factory checks them).
  std::shared_ptr<const Product> make(const std::string& name, const Options& options = {}) const {
    return find(name).make(options);
  }

 private:
  std::string what_;
  std::vector<Entry> entries_;
};

/// The registry entry of a product type P built as P(options), whose traits P().traits() gives.
template <typename Base, typename Traits, typename P>
typename Registry<Base, Traits>::Entry registry_entry() {
  return {P().traits(), [](const Options& options) -> std::shared_ptr<const Base> {
            return std::make_shared<P>(options);
          }};
}

}  // namespace fewstep
