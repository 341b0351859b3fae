// Internals of the Jinja interpreter shared by its files: the syntax tree the parser builds
// (jinja_parse.cpp) and the renderer walks (jinja_render.cpp), and the operations on values
// (operators, indexing, filters, tests, methods; jinja_ops.cpp).
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "chat/jinja.h"

namespace lumen::chat::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
    enum class K { Literal, Name, Attr, Item, Slice, Call, Filter, Test, Not, Neg, Binary, And, Or, Cond, List, Dict };
    K k;
    int line = 0;
    Value literal;
    std::string name;             // Name, Attr (attribute), Filter/Test (its name), Binary (operator)
    bool negated = false;         // Test: `is not`
    std::vector<ExprPtr> kids;    // operands, call/filter/test arguments after the subject, list items
    std::vector<std::pair<std::string, ExprPtr>> named;  // keyword arguments
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

struct Node {
    enum class K { Sequence, Text, Print, If, For, Set, SetBlock, Macro, Break, Continue, FilterBlock };
    K k;
    int line = 0;
    std::string text;                          // Text; Macro name; FilterBlock filter name
    ExprPtr expr;                              // Print, For iterable, Set value, FilterBlock (unused)
    std::vector<std::string> targets;          // For/Set variables; Macro parameters
    std::string attr;                          // Set ns.attr = ...: the attribute (targets[0] is ns)
    std::vector<std::pair<ExprPtr, Body>> branches;  // If: (condition, body); the else has no condition
    Body body, else_body;                      // For, SetBlock, Macro, FilterBlock, Sequence
    ExprPtr cond;                              // For: the `if` filter
    std::vector<ExprPtr> defaults;             // Macro: default per parameter (null: none)
};

// The tree of a template's source; syntax errors are lumen::Errors naming the line.
std::shared_ptr<const Node> parse_tree(std::string_view source);

// Operations on values. Errors are lumen::Errors "chat template: line N: ...".
[[noreturn]] void runtime(int line, const std::string& msg);
const char* kind_name(Value::Kind k);
bool is_int(const Value& v);   // an integer (booleans count, as in Python)
int64_t inum(const Value& v);
// The items a for loop or filter walks: list items, string characters, mapping keys.
Array iterate(const Value& v, int line);
// Argument `pos` of a call, or the keyword argument `name`; nullptr if neither was given.
const Value* arg(CallArgs& a, size_t pos, const char* name);
// v.name: a member, a method bound to v, or undefined.
Value attribute(const Value& v, const std::string& name, int line);
// v[key] for mappings, lists and strings (negative indices count from the end); undefined if absent.
Value item(const Value& v, const Value& key, int line);
// v[start:stop:step] with Python's rules; an absent bound is given as nullptr.
Value slice_of(const Value& v, const Value* start, const Value* stop, const Value* step, int line);
// a OP b for the binary operators, comparisons and `in` / `not in`.
Value binary(const std::string& op, const Value& a, const Value& b, int line);
Value apply_filter(const std::string& name, const Value& v, CallArgs& a, int line);
bool apply_test(const std::string& name, const Value& v, CallArgs& a, int line);

}  // namespace lumen::chat::jinja
