// Numbers as people read them, exactly as the API sends them: amounts are integer minor
// units, and the exponent of each currency says where the decimal point goes (the same
// table as service/kit/money.py: Stripe's zero-decimal currencies, ISO's three-decimal ones).
const ZERO_DECIMAL = new Set(["bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg",
  "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"]);
const THREE_DECIMAL = new Set(["bhd", "jod", "kwd", "omr", "tnd"]);

export function exponent(currency) {
  const code = String(currency).toLowerCase();
  if (ZERO_DECIMAL.has(code)) return 0;
  if (THREE_DECIMAL.has(code)) return 3;
  return 2;
}

// "123450" in usd -> "1234.50": string arithmetic, never through a float.
export function decimal(amount, currency) {
  const exp = exponent(currency);
  const negative = amount < 0;
  let digits = String(Math.abs(Math.trunc(amount)));
  if (exp === 0) return (negative ? "-" : "") + digits;
  digits = digits.padStart(exp + 1, "0");
  return `${negative ? "-" : ""}${digits.slice(0, -exp)}.${digits.slice(-exp)}`;
}

const formatters = new Map();
function formatter(currency) {
  const code = String(currency).toUpperCase();
  if (!formatters.has(code)) {
    const exp = exponent(currency);
    formatters.set(code, new Intl.NumberFormat("en-US", {
      style: "currency", currency: code, minimumFractionDigits: exp, maximumFractionDigits: exp,
    }));
  }
  return formatters.get(code);
}

// Intl formats a decimal string exactly (no float rounding of large amounts).
export function money(amount, currency) {
  if (amount === null || amount === undefined) return "—";
  return formatter(currency).format(decimal(amount, currency));
}

// A Money object of the API: {amount, currency, display}.
export function moneyOf(m) {
  return m ? money(m.amount, m.currency) : "—";
}

// Rates are decimals (0.043); shown as percentages, "—" when undefined.
export function percent(rate, digits = 1) {
  if (rate === null || rate === undefined) return "—";
  return `${(rate * 100).toFixed(digits)}%`;
}

export function ratio(value, digits = 2) {
  return value === null || value === undefined ? "—" : value.toFixed(digits);
}

export function count(n) {
  return n === null || n === undefined ? "—" : new Intl.NumberFormat("en-US").format(n);
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const days = seconds / 86400;
  if (days >= 1) return `${days.toFixed(1)} d`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

// Period labels: "2025-03" for months, "2025 Q1" for quarters, "2025" for years.
export function period(start, interval) {
  const [y, m] = start.split("-");
  if (interval === "year") return y;
  if (interval === "quarter") return `${y} Q${Math.floor((Number(m) - 1) / 3) + 1}`;
  if (interval === "month") return `${y}-${m}`;
  return start;
}

export function timestamp(iso) {
  if (!iso) return "never";
  // The API's times are UTC: "2025-01-31T23:49:46.123456+00:00" -> "2025-01-31 23:49:46 UTC".
  return `${iso.replace("T", " ").replace(/(\.\d+)?(Z|[+-]\d\d:\d\d)?$/, "")} UTC`;
}
