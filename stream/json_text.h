// The JSON text helpers moved to common/json_text.h; stream/ code keeps its
// names through these declarations.
#pragma once

#include "common/json_text.h"

namespace clv::stream {

using clv::AppendJsonString;
using clv::IsValidUtf8;

}  // namespace clv::stream
