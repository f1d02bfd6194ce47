#include "config/object_store.h"

#include <set>

namespace sluice::config {

const Object* ObjectStore::find(std::string_view key) const {
  auto it = objects_.find(std::string(key));
  return it == objects_.end() ? nullptr : it->second.get();
}

size_t ObjectStore::errorCount() const {
  size_t n = 0;
  for (const auto& [_, list] : errors_) {
    n += list.size();
  }
  return n;
}

StoreEvent ObjectStore::put(Object object) {
  std::string key = object.key();
  auto it = objects_.find(key);
  ++generation_;
  if (it == objects_.end()) {
    objects_.emplace(key, std::make_shared<const Object>(std::move(object)));
    return {StoreEvent::Type::Added, key};
  }
  // Keep the first-seen order: an update does not make an object younger.
  object.meta.seq = it->second->meta.seq;
  it->second = std::make_shared<const Object>(std::move(object));
  return {StoreEvent::Type::Updated, key};
}

std::vector<StoreEvent> ObjectStore::erase(const std::string& key) {
  std::vector<StoreEvent> events;
  if (objects_.erase(key) > 0) {
    ++generation_;
    owner_.erase(key);
    events.push_back({StoreEvent::Type::Deleted, key});
  }
  return events;
}

void ObjectStore::follow(const ObjectStore& from, const std::vector<StoreEvent>& events) {
  for (const auto& e : events) {
    auto it = from.objects_.find(e.key);
    if (it == from.objects_.end()) {
      objects_.erase(e.key);
      owner_.erase(e.key);
      continue;
    }
    objects_[e.key] = it->second;
    if (auto owner = from.owner_.find(e.key); owner != from.owner_.end()) {
      owner_[e.key] = owner->second;
    }
  }
  errors_ = from.errors_;
  warnings_ = from.warnings_;
  generation_ = from.generation_;
}

void ObjectStore::setErrors(const std::string& source, std::vector<ManifestError> errors) {
  if (errors.empty()) {
    errors_.erase(source);
  } else {
    errors_[source] = std::move(errors);
  }
}

std::vector<StoreEvent> ObjectStore::applySource(const std::string& source, ParseResult result) {
  std::vector<StoreEvent> events;
  std::set<std::string> keep;
  for (auto& obj : result.objects) {
    std::string key = obj.key();
    if (!keep.insert(key).second) {
      result.errors.push_back({obj.source, key,
                               "duplicate object in the same source (the first "
                               "one is used)"});
      continue;
    }
    auto owner = owner_.find(key);
    if (owner != owner_.end() && owner->second != source) {
      result.errors.push_back(
          {obj.source, key, "the same object is also defined in " + owner->second + " (ignored)"});
      keep.erase(key);
      continue;
    }
    owner_[key] = source;
    events.push_back(put(std::move(obj)));
  }
  // Objects whose new document failed keep their last good version.
  for (const auto& e : result.errors) {
    if (!e.object.empty() && owner_.count(e.object) > 0 && owner_[e.object] == source) {
      keep.insert(e.object);
    }
  }
  for (auto it = owner_.begin(); it != owner_.end();) {
    if (it->second == source && keep.count(it->first) == 0) {
      objects_.erase(it->first);
      events.push_back({StoreEvent::Type::Deleted, it->first});
      ++generation_;
      it = owner_.erase(it);
    } else {
      ++it;
    }
  }
  if (result.errors.empty()) {
    errors_.erase(source);
  } else {
    errors_[source] = std::move(result.errors);
  }
  if (result.warnings.empty()) {
    warnings_.erase(source);
  } else {
    warnings_[source] = std::move(result.warnings);
  }
  return events;
}

std::vector<StoreEvent> ObjectStore::removeSource(const std::string& source) {
  return applySource(source, ParseResult{});
}

}  // namespace sluice::config
