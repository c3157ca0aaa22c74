// The /v1 API from the browser. The key lives in sessionStorage (this tab only, gone when
// it closes) and travels only in the Authorization header: never in a URL, so never in a
// server log, the history or a Referer.
const KEY = "churn-ledger.api-key";

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

export const session = {
  key: () => sessionStorage.getItem(KEY),
  set: (key) => sessionStorage.setItem(KEY, key),
  clear: () => sessionStorage.removeItem(KEY),
};

// "/v1/metrics/mrr" + {start: ..., plan: ...} -> a relative URL, empty values left out.
export function url(path, params = {}) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") query.append(name, value);
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

export function csvUrl(path, params = {}) {
  return url(path, { ...params, format: "csv" });
}

async function request(target, accept, key = session.key()) {
  let response;
  try {
    response = await fetch(target, {
      headers: { Accept: accept, Authorization: `Bearer ${key ?? ""}` },
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "network", "The service cannot be reached.");
  }
  if (!response.ok) {
    let type = "error";
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      type = body.error?.type ?? type;
      message = body.error?.message ?? message;
    } catch {
      // Not our JSON error (a proxy's page): the status line says enough.
    }
    throw new ApiError(response.status, type, message);
  }
  return response;
}

export async function get(path, params = {}, key) {
  const response = await request(url(path, params), "application/json", key);
  return response.json();
}

// "Download CSV": the same /v1 URL with format=csv, fetched with the key (a plain link
// could not send the header) and handed to the browser as a file.
export async function download(target) {
  const response = await request(target, "text/csv");
  const blob = await response.blob();
  const name = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") ?? "")?.[1]
    ?? `${target.split("?")[0].split("/").pop()}.csv`;
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}
