// The page's only door to the service: every call carries the key, every failure becomes an
// ApiError holding the service's own error.message (docs/service.md, "Errors"), so the page can
// show it instead of swallowing it.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

export class Api {
  constructor(key) {
    this.key = key;
  }

  async request(method, path, body) {
    const headers = { Authorization: `Bearer ${this.key}` };
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, "network_error", `the service did not answer: ${err.message}`);
    }
    if (!response.ok) {
      throw await errorOf(response);
    }
    return response;
  }

  async json(method, path, body) {
    const response = await this.request(method, path, body);
    return response.json();
  }

  get(path) {
    return this.json("GET", path);
  }

  post(path, body) {
    return this.json("POST", path, body ?? {});
  }

  // Pictures need the key too, so an <img src> cannot load them directly: fetch the bytes
  // and hand the element an object URL.
  async imageUrl(userId, imageId) {
    const response = await this.request("GET", `${userPath(userId)}/images/${imageId}`);
    return URL.createObjectURL(await response.blob());
  }
}

export function userPath(userId) {
  return `/v1/users/${encodeURIComponent(userId)}`;
}

async function errorOf(response) {
  const text = await response.text();
  try {
    const { error } = JSON.parse(text);
    if (error && error.message) {
      return new ApiError(response.status, error.code ?? "error", error.message);
    }
  } catch {
    // Not the service's JSON error shape (a proxy's page, say): show the raw text below.
  }
  const detail = text.trim().slice(0, 300) || response.statusText;
  return new ApiError(response.status, "http_error", `HTTP ${response.status}: ${detail}`);
}
