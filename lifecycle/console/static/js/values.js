// LwM2M values as an operator reads and types them: enumerated codes by name (Battery Status
// "normal", not 0), times as dates, opaque data by size; and back from text to the JSON value
// a Write takes (docs/API.md: the shape Read returns is the shape Write accepts).

let enums = {};

// Names of enumerated values, from the console's enums.json (built from objects.enums).
export async function loadEnums() {
  try {
    const response = await fetch("enums.json");
    if (response.ok) enums = await response.json();
  } catch {
    enums = {};
  }
}

function enumOf(path) {
  const parts = String(path).split("/").filter(Boolean);
  return parts.length >= 3 ? enums[`${parts[0]}/${parts[2]}`] : undefined;
}

// The enumeration of a path, or undefined: {name, values: {"0": "normal", ...}}.
export function enumeration(path) {
  return enumOf(path);
}

// Text for one leaf value of the rendered-node JSON ({value, type, iso, encoding}).
export function formatValue(leaf, path = leaf.path) {
  const value = leaf.value;
  if (value === null || value === undefined) return "—";
  const known = enumOf(path);
  if (known && Number.isInteger(value)) {
    const name = known.values[String(value)];
    return name ? `${name} (${value})` : String(value);
  }
  if (leaf.type === "Time" && leaf.iso) return `${leaf.iso} (${value})`;
  if (leaf.encoding === "base64") {
    const bytes = Math.floor((String(value).length * 3) / 4) - (String(value).match(/=*$/)[0].length);
    return bytes ? `${bytes} bytes (base64 ${String(value).slice(0, 24)}${String(value).length > 24 ? "…" : ""})` : "empty";
  }
  return String(value);
}

// The value of a multiple resource's instances: "0: a, 1: b".
export function formatInstances(resource) {
  return (resource.instances || [])
    .map((item) => `${item.id}: ${formatValue({ ...item, type: resource.type }, `${resource.path}/${item.id}`)}`)
    .join(", ");
}

// The JSON value a Write sends, from what the operator typed for a resource of `type`.
// Throws an Error naming the expected form when the text does not fit.
export function parseInput(text, type, path) {
  const trimmed = text.trim();
  const known = enumOf(path);
  if (known) {
    const byName = Object.entries(known.values).find(([, name]) => name === trimmed.toLowerCase());
    if (byName) return Number(byName[0]);
  }
  switch (type) {
    case "Integer":
    case "Unsigned Integer":
    case "Time": {
      if (!/^-?\d+$/.test(trimmed)) {
        const names = known ? `, or one of: ${Object.values(known.values).join(", ")}` : "";
        throw new Error(`${path} is ${type}: type a whole number${names}`);
      }
      const number = Number(trimmed);
      if (type === "Unsigned Integer" && number < 0) throw new Error(`${path} is Unsigned Integer: no minus sign`);
      return number;
    }
    case "Float": {
      if (trimmed === "" || Number.isNaN(Number(trimmed))) throw new Error(`${path} is Float: type a number such as 1.5`);
      return Number(trimmed);
    }
    case "Boolean": {
      if (/^(true|1|on|yes)$/i.test(trimmed)) return true;
      if (/^(false|0|off|no)$/i.test(trimmed)) return false;
      throw new Error(`${path} is Boolean: type true or false`);
    }
    default:
      return text;
  }
}
