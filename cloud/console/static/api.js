// The API's JSON over fetch() with the key in the Authorization header. Any answer
// other than 2xx becomes an ApiError carrying the RFC 9457 problem's detail.

export class ApiError extends Error {
  /** `status` is 0 when the server could not be reached at all. */
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.detail = detail;
  }
}

export class Api {
  constructor(key) {
    this.key = key;
  }

  get(path) {
    return this.#request("GET", path);
  }

  post(path, body) {
    return this.#request("POST", path, body);
  }

  async #request(method, path, body) {
    const headers = { Authorization: `Bearer ${this.key}`, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch (err) {
      throw new ApiError(0, err.message);
    }
    if (response.ok) return response.json();
    throw new ApiError(response.status, await problemDetail(response));
  }
}

/** The problem's `detail` (else its title, else the status line) of a failed response. */
export async function problemDetail(response) {
  try {
    const problem = await response.json();
    if (typeof problem.detail === "string" && problem.detail) return problem.detail;
    if (typeof problem.title === "string" && problem.title) return problem.title;
  } catch {
    // Not JSON (a proxy's error page): the status line below says enough.
  }
  return `${response.status} ${response.statusText}`.trim();
}
